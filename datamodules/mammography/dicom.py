"""The mammography image reader: a DICOM (through :func:`medxfer.data.dicom.read_dicom`, the
standard's display pipeline) or PNG / JPEG / TIFF mammogram as one float plane, every breast
facing left. Declared as the ``mammogram`` image reader (what a mammography cache records)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medxfer.data.dicom import read_dicom
from medxfer.data.images import read_grey_image, reader_version

__all__ = ["orient_left", "read_dicom", "read_mammogram"]


def orient_left(image: np.ndarray) -> np.ndarray:
    """Flip ``image`` horizontally when most of its intensity (the breast) lies in the right
    half, so every breast faces the same way whatever its laterality or acquisition."""
    half = image.shape[1] // 2
    return image[:, ::-1].copy() if image[:, half:].sum() > image[:, :half].sum() else image


# version 2: the VOI LUT function (SIGMOID, LINEAR_EXACT), 8-bit VOI LUTs beyond 256 entries
# and Window Width 1 changed the pixels of some files; caches of version 1 are refused.
@reader_version(2)
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
