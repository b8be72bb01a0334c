"""Reading mammograms (and other radiographs) from DICOM as one float plane.

Display pipeline of the DICOM standard (PS3.3 C.11): stored values -> modality LUT (rescale
slope / intercept) -> VOI LUT or window (centre / width, linear) -> presentation, where
MONOCHROME1 means "bright is low", so it is inverted here to MONOCHROME2's "bright is dense".
12/16-bit values stay float until resizing; the result is float32 ``(H, W)`` in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medxfer.data.images import ImageDecodeError, read_grey_image, register_reader, where

__all__ = ["orient_left", "read_dicom", "read_mammogram"]


def _window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear windowing (PS3.3 C.11.2.1.2.1) onto [0, 1]."""
    width = max(float(width), 1.0)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def read_dicom(
    path: str | os.PathLike[str], context: str = "", apply_window: bool = True
) -> np.ndarray:
    """Read a single-frame grey DICOM image as float32 ``(H, W)`` in [0, 1].

    Args:
        path: the file.
        context: appended to error messages (e.g. the exam list's line).
        apply_window: apply the VOI LUT or window stored in the file (else scale the modality
            values by their range).

    Raises:
        ImageDecodeError: missing file, not DICOM, no pixel data, or a decoder failure; the
            message names the file.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    what = where(path, context)
    if not Path(path).is_file():
        raise ImageDecodeError(f"image not found: {what}")
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"could not decode DICOM {what}: {err}") from None
    if stored.ndim != 2:
        raise ImageDecodeError(
            f"DICOM {what}: expected one grey frame, got pixel array of shape {stored.shape}"
        )
    x = apply_modality_lut(stored, ds).astype(np.float64)
    if apply_window and "VOILUTSequence" in ds:
        x = apply_voi_lut(x, ds).astype(np.float64)
        lut = ds.VOILUTSequence[0]
        out_bits = int(lut.LUTDescriptor[2])
        x = x / float(2**out_bits - 1)
    elif apply_window and "WindowCenter" in ds and "WindowWidth" in ds:
        x = _window(x, _first(ds.WindowCenter), _first(ds.WindowWidth))
    else:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    x = np.clip(x, 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        x = 1.0 - x
    return x.astype(np.float32)


def orient_left(image: np.ndarray) -> np.ndarray:
    """Flip ``image`` horizontally when most of its intensity (the breast) lies in the right
    half, so every breast faces the same way whatever its laterality or acquisition."""
    half = image.shape[1] // 2
    return image[:, ::-1].copy() if image[:, half:].sum() > image[:, :half].sum() else image


def read_mammogram(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """A DICOM (``.dcm`` or no suffix) or PNG / JPEG / TIFF mammogram as float ``(H, W)`` in
    [0, 1], facing left (:func:`orient_left`)."""
    suffix = Path(path).suffix.lower()
    image = (
        read_grey_image(path, context)
        if suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff")
        else read_dicom(path, context)
    )
    return orient_left(image)


register_reader("mammogram", read_mammogram)
