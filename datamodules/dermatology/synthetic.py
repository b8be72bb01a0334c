"""Synthetic dermatology cases in medxfer's case-table format (and SCIN-like image columns).

Each case is 1-6 colour "photos" of one skin condition drawn on a skin tone of its Fitzpatrick
type, with consumer-photo variation (lighting gradient, position, scale, noise). Every condition
has its own texture, which a small CNN learns within minutes at 64 px. The differential is the
true condition with most of the weight, sometimes shared with a second one. A shifted dataset
changes condition prevalence (cancer-heavy, like dataset B of Mustafa et al. 2021) and the
skin-type mix, and is written in the one-row-per-image layout so both layouts are exercised.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CONDITIONS", "SKIN_TONES", "render_skin", "write_synthetic_derm"]

#: RGB of Fitzpatrick types I-VI.
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "I": (250, 220, 196), "II": (238, 192, 164), "III": (219, 168, 133),
    "IV": (190, 130, 94), "V": (136, 86, 56), "VI": (88, 57, 40),
}  # fmt: skip
#: Synthetic conditions with their in-domain prevalence; the last three are rare (-> "Other").
CONDITIONS: dict[str, float] = {
    "Eczema": 0.22, "Psoriasis": 0.13, "Acne": 0.13, "Tinea": 0.1, "Urticaria": 0.1,
    "Seborrheic Keratosis": 0.09, "Melanoma": 0.07, "Basal Cell Carcinoma": 0.07,
    "Vitiligo": 0.03, "Rosacea": 0.03, "Verruca": 0.03,
}  # fmt: skip
_SHIFTED: dict[str, float] = {
    "Eczema": 0.08, "Psoriasis": 0.06, "Acne": 0.04, "Tinea": 0.05, "Urticaria": 0.04,
    "Seborrheic Keratosis": 0.2, "Melanoma": 0.25, "Basal Cell Carcinoma": 0.22,
    "Vitiligo": 0.02, "Rosacea": 0.02, "Verruca": 0.02,
}  # fmt: skip


def _disk(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (x - cx) ** 2 + (y - cy) ** 2 < r**2


def render_skin(condition: str, tone: str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """One uint8 ``(size, size, 3)`` photo of ``condition`` on Fitzpatrick ``tone`` skin."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.array(SKIN_TONES[tone], dtype=np.float32) / 255
    img = np.broadcast_to(base, (size, size, 3)).copy()
    img *= (1 + 0.06 * rng.normal(size=(size, size, 1))).astype(np.float32)  # skin texture
    cx, cy, s = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.8, 1.2)
    red, dark, white = (
        np.array([0.75, 0.2, 0.2]),
        np.array([0.15, 0.08, 0.05]),
        np.array([0.95, 0.95, 0.92]),
    )

    def paint(region: np.ndarray, colour: np.ndarray, alpha: float) -> None:
        img[region] = (1 - alpha) * img[region] + alpha * colour

    if condition == "Eczema":
        for _ in range(5):
            paint(
                _disk(x, y, cx + rng.normal(0, 0.12), cy + rng.normal(0, 0.12), 0.08 * s)
                & (rng.random((size, size)) < 0.7),
                red,
                0.45,
            )
    elif condition == "Psoriasis":
        plaque = _disk(x, y, cx, cy, 0.2 * s)
        paint(plaque, red, 0.55)
        paint(plaque & (rng.random((size, size)) < 0.25), white, 0.8)
    elif condition == "Acne":
        for _ in range(rng.integers(15, 30)):
            paint(_disk(x, y, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), 0.025), red, 0.7)
    elif condition == "Tinea":
        r = 0.2 * s
        paint(_disk(x, y, cx, cy, r) & ~_disk(x, y, cx, cy, r - 0.04), red, 0.6)
    elif condition == "Urticaria":
        for _ in range(4):
            px, py, r = cx + rng.normal(0, 0.15), cy + rng.normal(0, 0.15), 0.07 * s
            paint(_disk(x, y, px, py, r + 0.025), red, 0.35)
            paint(_disk(x, y, px, py, r), white, 0.35)
    elif condition == "Seborrheic Keratosis":
        patch = (np.abs(x - cx) < 0.14 * s) & (np.abs(y - cy) < 0.1 * s)
        paint(patch, np.array([0.45, 0.3, 0.15]), 0.75)
        paint(patch & (rng.random((size, size)) < 0.3), dark, 0.5)
    elif condition == "Melanoma":
        blob = _disk(x, y, cx, cy, 0.12 * s) | _disk(x, y, cx + 0.08 * s, cy + 0.04, 0.08 * s)
        paint(blob, dark, 0.85)
        paint(blob & (rng.random((size, size)) < 0.3), np.array([0.35, 0.12, 0.25]), 0.7)
    elif condition == "Basal Cell Carcinoma":
        nodule = _disk(x, y, cx, cy, 0.11 * s)
        paint(nodule, np.array([0.93, 0.75, 0.75]), 0.8)
        paint(nodule & ~_disk(x, y, cx, cy, 0.09 * s), red, 0.8)
    elif condition == "Vitiligo":
        paint(_disk(x, y, cx, cy, 0.18 * s), white, 0.8)
    elif condition == "Rosacea":
        paint(np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.1) > 0.5, red, 0.3)
    elif condition == "Verruca":
        paint(
            _disk(x, y, cx, cy, 0.06 * s) & (rng.random((size, size)) < 0.6),
            np.array([0.6, 0.55, 0.5]),
            0.8,
        )
    light = 1 + rng.uniform(-0.15, 0.15) * (x - 0.5) + rng.uniform(-0.15, 0.15) * (y - 0.5)
    img = img * light[..., None] + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_synthetic_derm(
    out_dir: str | os.PathLike[str],
    n_cases: int = 600,
    size: int = 96,
    seed: int = 0,
    shifted: bool = False,
    layout: str | None = None,
) -> Path:
    """Write ``cases.csv`` and ``images/*.jpg`` under ``out_dir``.

    Args:
        n_cases: cases (about 10 % of patients have two).
        size: image side.
        seed: random seed.
        shifted: the cancer-heavy, darker-skin-mix shifted dataset.
        layout: ``columns`` (``image_1_path ... image_6_path``) or ``rows`` (one row per image);
            default: columns in-domain, rows when shifted.

    Returns:
        The path of ``cases.csv``.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    layout = layout or ("rows" if shifted else "columns")
    prevalence = _SHIFTED if shifted else CONDITIONS
    names = list(prevalence)
    probs = np.array(list(prevalence.values()))
    probs /= probs.sum()
    tones = list(SKIN_TONES)
    tone_p = np.array(
        [0.1, 0.15, 0.15, 0.2, 0.2, 0.2] if shifted else [0.15, 0.3, 0.25, 0.15, 0.1, 0.05]
    )
    cases = []
    patient = 0
    for c in range(n_cases):
        if c == 0 or rng.random() > 0.1:
            patient += 1
            tone = str(rng.choice(tones, p=tone_p))
            sex = str(rng.choice(["female", "male"]))
            age = str(rng.choice(["18-29", "30-39", "40-49", "50-64", "65+"]))
        cond = str(rng.choice(names, p=probs))
        diff = {cond: 1.0}
        if rng.random() < 0.4:
            other = str(rng.choice([n for n in names if n != cond]))
            w = round(float(rng.uniform(0.55, 0.85)), 2)
            diff = {cond: w, other: round(1 - w, 2)}
        paths = []
        for k in range(int(rng.integers(1, 7))):
            rel = f"images/{'b' if shifted else 'a'}{c:05d}_{k}.jpg"
            Image.fromarray(render_skin(cond, tone, rng, size)).save(out / rel, quality=92)
            paths.append(rel)
        differential = "|".join(f"{n}:{w:g}" for n, w in diff.items())
        cases.append((f"case{c:05d}", f"p{patient:05d}", paths, differential, tone, sex, age))
    meta = ["differential", "fitzpatrick", "sex", "age_group", "site"]
    site = "shifted" if shifted else "clinic-a"
    with open(out / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        if layout == "columns":
            w.writerow(["case_id", "patient_id", *[f"image_{k}_path" for k in range(1, 7)], *meta])
            for cid, pid, paths, diff, tone, sex, age in cases:
                w.writerow(
                    [cid, pid, *(paths + [""] * (6 - len(paths))), diff, tone, sex, age, site]
                )
        else:
            w.writerow(["case_id", "patient_id", "image_path", *meta])
            for cid, pid, paths, diff, tone, sex, age in cases:
                for p in paths:
                    w.writerow([cid, pid, p, diff, tone, sex, age, site])
    return out / "cases.csv"
