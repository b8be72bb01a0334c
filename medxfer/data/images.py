"""Decoding radiographs to one grey float plane, whatever container they arrive in.

Published chest X-ray sets store grey images as 8-bit L, RGB or RGBA with equal channels (NIH
ChestX-ray14 has both), or 16-bit PNG. All become a float32 ``(H, W)`` array in [0, 1] here, so
the rest of the pipeline never sees the container.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "READERS",
    "READER_VERSIONS",
    "ImageDecodeError",
    "known_reader",
    "read_grey_image",
    "read_label_image",
    "read_rgb_image",
    "register_reader",
    "where",
]

#: Decoders by name: ``(path, context) -> float32 image in [0, 1]``, ``(H, W)`` or ``(H, W, 3)``.
#: The core registers ``grey`` and ``rgb``; modality packages register their own (the
#: mammography package its DICOM ``mammogram`` reader) with :func:`register_reader`.
READERS: dict[str, Callable[..., np.ndarray]] = {}

#: Version of each decoder's output. Bump when a decoder's pixels change, so caches built by
#: the old one are refused instead of silently differing from the direct path.
READER_VERSIONS: dict[str, int] = {}


def register_reader(name: str, reader: Callable[..., np.ndarray], version: int = 1) -> None:
    """Register an image decoder under ``name`` (what a datamodule's ``reader`` names and an
    image cache records, with ``version``)."""
    READERS[name] = reader
    READER_VERSIONS[name] = version


def known_reader(name: str) -> bool:
    """Whether a decoder ``name`` is registered, after loading the datamodule packages (medxfer's
    own modalities and third-party ones, through the ``medxfer.datamodules`` entry points) when
    it is not yet: a fresh worker process finds every reader without importing a modality."""
    if name not in READERS:
        from importlib.metadata import entry_points

        for ep in entry_points(group="medxfer.datamodules"):
            try:
                ep.load()
            except Exception as err:  # a broken plug-in must not break the others
                warnings.warn(
                    f"could not load plug-in {ep.name!r} ({ep.value}): {err}", stacklevel=2
                )
    return name in READERS


class ImageDecodeError(OSError):
    """An image file is missing or could not be decoded; the message names it (and its row)."""


def read_grey_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read an image file as a grey float32 ``(H, W)`` array scaled to [0, 1].

    Colour containers with equal channels are read from the first channel; true colour images
    are converted to luminance (ITU-R 601); alpha is dropped. 16-bit images keep their range
    (divided by 65535), 8-bit are divided by 255.

    Args:
        path: the file.
        context: appended to error messages (e.g. ``"row 12 of train.csv"``).

    Raises:
        ImageDecodeError: missing file or a decoder failure, naming ``path`` and ``context``.
    """
    return _decode(path, context, _to_grey)


def read_rgb_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read a colour photograph as float32 ``(H, W, 3)`` in [0, 1] (alpha dropped, grey
    repeated), for dermatology. Errors as in :func:`read_grey_image`."""
    return _decode(path, context, lambda img: np.asarray(img.convert("RGB"), np.float32) / 255.0)


def read_label_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read a mask / label-map file as its stored integer values ``(H, W)``: never scaled or
    interpolated, so a mask's class values can be checked exactly. 16-bit images keep their
    values (``int32``); palette, 1-bit and colour images are read as 8-bit grey (``uint8``; a
    0/255 palette GIF gives 0 and 255). Errors as in :func:`read_grey_image`."""

    def convert(img: Image.Image) -> np.ndarray:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img, dtype=np.int32)
        return np.asarray(img.convert("L"), dtype=np.uint8)

    return _decode(path, context, convert)


def where(path: str | os.PathLike[str], context: str = "") -> str:
    """``path``, with ``context`` (e.g. a CSV line) in brackets: how every image error names
    what failed."""
    return f"{path} ({context})" if context else str(path)


def _decode(
    path: str | os.PathLike[str], context: str, convert: Callable[[Image.Image], np.ndarray]
) -> np.ndarray:
    """Open an image file with PIL and ``convert`` it, every failure an
    :class:`ImageDecodeError` naming the file and ``context``."""
    if not Path(path).is_file():
        raise ImageDecodeError(f"image not found: {where(path, context)}")
    try:
        with Image.open(path) as img:
            img.load()
            return convert(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"could not decode image {where(path, context)}: {err}") from None


def _to_grey(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return np.clip(arr / top, 0.0, 1.0)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode in ("L", "P", "1", "LA"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0] / 255.0
    return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0


register_reader("grey", read_grey_image)
register_reader("rgb", read_rgb_image)
