"""Synthetic screening mammography exams written as real DICOM files plus the exam list.

Each exam has four 12-bit views (L-CC, R-CC, L-MLO, R-MLO) as DICOM Digital Mammography images
(pydicom), breasts facing their own side as acquired, fibroglandular texture by BI-RADS density
(A-D), MONOCHROME1 and MONOCHROME2 files mixed, with a window stored in each file. Exams of
women diagnosed within ``visible_months`` carry a learnable lesion (a bright spiculated mass in
both views of one breast, fainter the later the diagnosis). A shifted site differs in exposure
and noise. Outcomes: months to cancer (blank for none) and follow-up months, so every horizon
has positives, negatives and masked exams.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .tables import EXAM_COLUMNS

__all__ = ["render_mammogram", "write_dicom", "write_synthetic_mammo"]

_DENSITY_TEXTURE = {"A": 0.05, "B": 0.15, "C": 0.3, "D": 0.45}


def render_mammogram(
    side: str,
    density: str,
    rng: np.random.Generator,
    size: int = 96,
    lesion: float = 0.0,
    exposure: float = 1.0,
    noise: float = 0.02,
) -> np.ndarray:
    """A float ``(size, size)`` view in [0, 1] (bright = dense), breast on the ``side`` it was
    acquired (``"L"``: chest wall on the left)."""
    y, x = np.mgrid[0:size, 0:size] / size
    xx = x if side == "L" else 1 - x
    breast = (xx / 0.8) ** 2 + ((y - 0.5) / 0.45) ** 2 < 1
    img = np.where(breast, 0.35, 0.0)
    tissue = rng.random((size // 8, size // 8))
    tissue = np.kron(tissue, np.ones((8, 8)))[:size, :size]
    img = img + breast * _DENSITY_TEXTURE[density] * tissue * (1 - xx)
    if lesion > 0:
        cx, cy, r = rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.65), 0.05 + 0.03 * lesion
        d = np.sqrt((xx - cx) ** 2 + (y - cy) ** 2)
        angle = np.arctan2(y - cy, xx - cx)
        spikes = r * (1 + 0.4 * np.abs(np.sin(4 * angle)))
        img = img + breast * (d < spikes) * 0.45 * lesion
    img = img * exposure + rng.normal(0, noise, img.shape) * breast
    return np.clip(img, 0, 1)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    laterality: str,
    view: str,
    monochrome1: bool,
    patient: str,
    exam: str,
) -> None:
    """Write ``pixels`` (float [0, 1], bright = dense) as a 12-bit Digital Mammography DICOM."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.round(pixels * 4095).astype(np.uint16)
    if monochrome1:
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray, for presentation
    )
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.AccessionNumber, ds.Modality = patient, exam, "MG"
    ds.ImageLaterality, ds.ViewPosition = laterality, view
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (
        1,
        "MONOCHROME1" if monochrome1 else "MONOCHROME2",
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_synthetic_mammo(
    out_dir: str | os.PathLike[str],
    n_exams: int = 300,
    size: int = 96,
    seed: int = 0,
    shifted: bool = False,
    cancer_rate: float = 0.25,
    visible_months: int = 39,
) -> Path:
    """Write ``exams.csv`` and ``dicom/<exam>_<lat>_<view>.dcm`` under ``out_dir``.

    Returns:
        The path of ``exams.csv``.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    exposure, noise = (0.8, 0.05) if shifted else (1.0, 0.02)
    site = "site-b" if shifted else "site-a"
    rows = []
    patient = 0
    for e in range(n_exams):
        if e == 0 or rng.random() > 0.2:
            patient += 1
            density = str(rng.choice(list(_DENSITY_TEXTURE), p=[0.1, 0.4, 0.4, 0.1]))
        cancer = float(rng.uniform(0, 60)) if rng.random() < cancer_rate else float("nan")
        follow = float(rng.uniform(6, 72))
        if not np.isnan(cancer):
            follow = max(follow, cancer)  # the diagnosis is part of the follow-up
        lesion = (
            0.0
            if np.isnan(cancer) or cancer > visible_months
            else 1.0 - 0.5 * cancer / visible_months
        )
        sick = str(rng.choice(["L", "R"]))
        for lat, view in (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")):
            pix = render_mammogram(
                lat, density, rng, size, lesion if lat == sick else 0.0, exposure, noise
            )
            rel = f"dicom/e{e:05d}_{lat}_{view}.dcm"
            write_dicom(
                out / rel, pix, lat, view, bool(rng.random() < 0.5), f"p{patient:05d}", f"e{e:05d}"
            )
            rows.append(
                [
                    f"e{e:05d}",
                    f"p{patient:05d}",
                    lat,
                    view,
                    rel,
                    "" if np.isnan(cancer) else f"{cancer:.1f}",
                    f"{follow:.1f}",
                    density,
                    site,
                ]
            )
    with open(out / "exams.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EXAM_COLUMNS)
        w.writerows(rows)
    return out / "exams.csv"
