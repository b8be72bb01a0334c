"""Synthetic data in the three real layouts of the segmentation benchmark, read by the same
readers as the downloads: DRIVE (TIFF photos, GIF vessel and field-of-view masks), Montgomery
(PNG radiographs, left / right lung PNG masks, clinical readings) and SIIM-ACR (nested DICOM
files and a run-length CSV). Each has a learnable structure: dark vessels on a bright fundus
disc, dark lungs in a bright body, a bright pneumothorax blob in one lung.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from medxfer.data.rle import rle_encode

__all__ = ["write_synthetic_drive", "write_synthetic_montgomery", "write_synthetic_siim"]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size] / size
    return y, x


def _lungs(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A radiograph-like image (float [0, 1]) and its left / right lung masks. The patient's
    left lung is on the image's right, as radiographs are read."""
    y, x = _grid(size)
    img = np.full((size, size), 0.1)
    img[((x - 0.5) / 0.46) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1] = 0.65
    masks = []
    for cx in (0.7, 0.3):  # patient's left, then right
        cx += rng.normal(0, 0.02)
        w, h = rng.uniform(0.13, 0.17), rng.uniform(0.26, 0.32)
        lung = ((x - cx) / w) ** 2 + ((y - 0.5) / h) ** 2 < 1
        img[lung] = 0.25
        masks.append(lung)
    img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return img, masks[0], masks[1]


def write_synthetic_montgomery(
    out: str | os.PathLike[str], n_images: int = 40, size: int = 96, seed: int = 0
) -> Path:
    """The Montgomery County layout under ``out``; returns ``out``."""
    out, rng = Path(out), np.random.default_rng(seed)
    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask", "ClinicalReadings"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(1, n_images + 1):
        name = f"MCUCXR_{i:04d}_{int(rng.random() < 0.4)}"
        img, left, right = _lungs(rng, size)
        Image.fromarray((img * 255).astype(np.uint8)).save(out / "CXR_png" / f"{name}.png")
        Image.fromarray(left.astype(np.uint8) * 255).save(
            out / "ManualMask/leftMask" / f"{name}.png"
        )
        Image.fromarray(right.astype(np.uint8) * 255).save(
            out / "ManualMask/rightMask" / f"{name}.png"
        )
        sex, age = "FM"[int(rng.integers(0, 2))], int(rng.integers(18, 85))
        (out / "ClinicalReadings" / f"{name}.txt").write_text(
            f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{'normal' if name[-1] == '0' else 'TB'}\n"
        )
    return out


def _fundus(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB fundus-like photo (uint8), its vessel mask and its field of view."""
    y, x = _grid(size)
    fov = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.46**2
    img = np.zeros((size, size, 3))
    img[fov] = (0.85, 0.45, 0.2)
    vessels = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(4, 7))):
        angle, bend = rng.uniform(0, 2 * np.pi), rng.uniform(-2, 2)
        t = np.linspace(0, 0.45, 200)
        px = 0.5 + t * np.cos(angle + bend * t)
        py = 0.5 + t * np.sin(angle + bend * t)
        for cx, cy in zip(px, py, strict=True):
            vessels |= (x - cx) ** 2 + (y - cy) ** 2 < (0.012) ** 2
    vessels &= fov
    img[vessels] = (0.45, 0.1, 0.05)
    img = np.clip(img + rng.normal(0, 0.04, img.shape) * fov[..., None], 0, 1)
    return (img * 255).astype(np.uint8), vessels, fov


def write_synthetic_drive(
    out: str | os.PathLike[str], n_train: int = 20, n_test: int = 10, size: int = 96, seed: int = 0
) -> Path:
    """The DRIVE layout under ``out`` (``training/`` numbered from 21, ``test/`` from 01, with a
    second observer for the test part); returns ``out``."""
    out, rng = Path(out), np.random.default_rng(seed)
    for part, numbers in (("training", range(21, 21 + n_train)), ("test", range(1, 1 + n_test))):
        subs = ["images", "1st_manual", "mask"] + (["2nd_manual"] if part == "test" else [])
        for sub in subs:
            (out / part / sub).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            img, vessels, fov = _fundus(rng, size)
            Image.fromarray(img).save(out / part / "images" / f"{n:02d}_{part}.tif")
            Image.fromarray(vessels.astype(np.uint8) * 255).save(
                out / part / "1st_manual" / f"{n:02d}_manual1.gif"
            )
            if part == "test":
                Image.fromarray(vessels.astype(np.uint8) * 255).save(
                    out / part / "2nd_manual" / f"{n:02d}_manual2.gif"
                )
            Image.fromarray(fov.astype(np.uint8) * 255).save(
                out / part / "mask" / f"{n:02d}_{part}_mask.gif"
            )
    return out


def _write_cr_dicom(
    path: Path, pixels: np.ndarray, patient: str, sex: str, sop: str, study: str, series: str
) -> None:
    """An 8-bit MONOCHROME2 CR image, as the SIIM-ACR files are."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, as SIIM's
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientSex, ds.Modality = patient, sex, "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (pixels * 255).astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_synthetic_siim(
    out: str | os.PathLike[str],
    n_images: int = 40,
    size: int = 64,
    seed: int = 0,
    encoding: Literal["relative", "absolute"] = "relative",
) -> Path:
    """The SIIM-ACR layout under ``out``: ``dicom-images-train/<study>/<series>/<ImageId>.dcm``
    and ``train-rle.csv`` (header ``ImageId, EncodedPixels``; positives' masks split into two
    rows, unioned by the reader); returns the CSV."""
    from pydicom.uid import generate_uid

    out, rng = Path(out), np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        img, left, right = _lungs(rng, size)
        sop, study, series = generate_uid(), generate_uid(), generate_uid()
        mask, centre = np.zeros_like(left), size // 2
        if rng.random() < 0.5:
            lung = left if rng.random() < 0.5 else right
            ys, xs = np.nonzero(lung)
            k = int(rng.integers(len(ys)))
            yy, xx = np.mgrid[0:size, 0:size]
            mask = lung & ((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 < (size * 0.12) ** 2)
            centre = int(ys[k])
            img = np.where(mask, 0.05, img)  # collapsed lung: no lung markings, darker
        patient = f"synthetic-{i // 2:04d}"  # two images per patient
        _write_cr_dicom(
            out / "dicom-images-train" / study / series / f"{sop}.dcm",
            img,
            patient,
            "FM"[i % 2],
            sop,
            study,
            series,
        )
        if mask.any():
            half = mask.copy()
            half[:centre] = False  # the blob's lower and upper halves: two rows to union
            rest = mask & ~half
            for part in (half, rest):
                if part.any():
                    rows.append((sop, rle_encode(part, encoding)))
        else:
            rows.append((sop, "-1"))
    table = out / "train-rle.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", " EncodedPixels"])
        writer.writerows((sop, f" {rle}") for sop, rle in rows)
    return table
