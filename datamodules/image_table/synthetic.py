"""Synthetic data for the generic table datamodule, in the layouts users bring: a metadata table
with the columns of a public COVID chest X-ray collection (``patientid, sex, age, finding, view,
filename``) or an image folder ``root/<class>/<image>``, read by the same
:class:`~medxfer.datamodules.image_table.ImageTable` code as a real one.

Each class draws its own shape (a disk, a square or a ring) on a noisy colour background, so a
small CNN learns it within a few CPU steps; the shifted site changes tint, noise and prevalence.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["TABLE_CLASSES", "render_shape", "write_synthetic_table"]

#: The synthetic classes and their in-domain prevalence (the shifted site's is reversed).
TABLE_CLASSES: dict[str, float] = {"normal": 0.5, "pneumonia": 0.3, "covid": 0.2}


def render_shape(label: str, rng: np.random.Generator, size: int, shifted: bool) -> np.ndarray:
    """One RGB uint8 ``(size, size, 3)`` image of class ``label``."""
    y, x = np.mgrid[0:size, 0:size] / size
    tint = np.array([0.45, 0.35, 0.3]) if shifted else np.array([0.3, 0.35, 0.45])
    img = tint + rng.normal(0, 0.12 if shifted else 0.08, (size, size, 3))
    cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.25)
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    shapes = {
        "normal": d < r,
        "pneumonia": (np.abs(x - cx) < r * 0.9) & (np.abs(y - cy) < r * 0.9),
        "covid": (d < r) & (d > r * 0.6),
    }
    img[shapes[label]] += 0.4
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_synthetic_table(
    out: str | os.PathLike[str],
    n_patients: int = 120,
    size: int = 64,
    seed: int = 0,
    shifted: bool = False,
    layout: str = "table",
) -> Path:
    """Write a synthetic dataset and return its table (or, for ``layout="folder"``, its root).

    Args:
        out: folder to write into (``metadata.csv`` and ``images/``, or ``<class>/`` folders).
        n_patients: patients, each with 1-2 images (the folder layout: one image each).
        size: image side in pixels.
        seed: random seed.
        shifted: another site: other tint and noise, reversed class prevalence.
        layout: ``table`` or ``folder``.
    """
    if layout not in ("table", "folder"):
        raise ValueError(f"layout must be 'table' or 'folder', got {layout!r}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    names = list(TABLE_CLASSES)
    prevalence = np.array(list(TABLE_CLASSES.values()))
    if shifted:
        prevalence = prevalence[::-1]
    rows = []
    for p in range(1, n_patients + 1):
        label = names[rng.choice(len(names), p=prevalence / prevalence.sum())]
        sex, age = ("F", "M")[rng.integers(0, 2)], int(rng.integers(18, 91))
        for k in range(1 if layout == "folder" else int(rng.integers(1, 3))):
            rel = f"{label}/{p:04d}_{k}.png" if layout == "folder" else f"images/{p:04d}_{k}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_shape(label, rng, size, shifted)).save(out / rel)
            view = ("PA", "AP")[rng.integers(0, 2)]
            rows.append(
                {
                    "patientid": f"P{seed}{p:05d}",
                    "sex": sex,
                    "age": age,
                    "finding": label,
                    "view": view,
                    "filename": rel,
                }
            )
    if layout == "folder":
        return out
    table = out / "metadata.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table
