"""Decoding radiographs to one grey float plane, whatever container they arrive in.

Published chest X-ray sets store grey images as 8-bit L, RGB or RGBA with equal channels (NIH
ChestX-ray14 has both), or 16-bit PNG. All become a float32 ``(H, W)`` array in [0, 1] here, so
the rest of the pipeline never sees the container.

What cannot be read faithfully is refused, naming the file, rather than converted silently:

* an image with a side under :data:`MIN_SIDE` pixels (a 1-pixel placeholder, a thumbnail):
  resized to the training size it would be a flat or blocky image with a real label;
* an image with transparent pixels (alpha below 255): the
  colour values under them are whatever the exporting program left, and dropping the alpha
  would train on them. An alpha channel that is opaque everywhere (21 of the real NIH subset's
  PNGs are RGBA) loses nothing and is read as before;
* a CMYK image: a print colour space whose conversion needs the colour profile, which PIL's
  naive conversion ignores (colours, and a radiograph's grey levels, come out wrong).

These checks are the image readers' (``grey``, ``rgb``); masks (:func:`read_label_image`) are
read as stored, and checked against their image by the segmentation data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "MIN_SIDE",
    "READERS",
    "READER_VERSIONS",
    "ImageDecodeError",
    "image_reader",
    "known_reader",
    "output_version",
    "read_grey_image",
    "read_label_image",
    "read_rgb_image",
    "reader_version",
    "split_member",
    "where",
]

#: The decoders loaded so far, by name: ``(path, context) -> float32 image in [0, 1]``, ``(H, W)``
#: or ``(H, W, 3)``. Filled from the ``medxfer.image_readers`` entry points on first use
#: (:func:`image_reader`): medxfer declares ``grey``, ``rgb``, ``dicom`` and the mammography
#: package's ``mammogram`` there, exactly as a third-party package declares its own.
READERS: dict[str, Callable[..., np.ndarray]] = {}

#: Version of each loaded decoder's output (its :func:`reader_version` mark, default 1). Bump it
#: when a decoder's pixels change, so caches built by the old one are refused instead of
#: silently differing from the direct path.
READER_VERSIONS: dict[str, int] = {}

F = TypeVar("F", bound=Callable[..., np.ndarray])

#: The smallest image side (pixels) the readers accept. Real medical images are hundreds of
#: pixels a side and the smallest model inputs medxfer trains on are 32; anything under 8 is a
#: placeholder, an icon or a damaged export, never an image worth a label.
MIN_SIDE = 8


def reader_version(version: int) -> Callable[[F], F]:
    """Mark an image decoder's output ``version`` (what an image cache records and compares).

    Example:
        >>> @reader_version(2)
        ... def read_thing(path, context=""): ...
        >>> read_thing.reader_version
        2
    """

    def mark(reader: F) -> F:
        reader.reader_version = version  # type: ignore[attr-defined]
        return reader

    return mark


def image_reader(name: str) -> Callable[..., np.ndarray]:
    """The decoder declared as ``name`` in the ``medxfer.image_readers`` entry points (what a
    datamodule's ``reader`` and an image cache name), imported on first use: a fresh worker
    process finds every reader without importing a modality it does not need.

    Raises:
        medxfer.errors.UnknownNameError: no reader of that name (close names are listed).
    """
    if name not in READERS:
        from medxfer.plugins import load

        reader = load("readers", name)
        READERS[name] = reader
        READER_VERSIONS[name] = int(getattr(reader, "reader_version", 1))
    return READERS[name]


def output_version(name: str) -> int:
    """The output version of the decoder ``name`` (see :func:`reader_version`)."""
    image_reader(name)
    return READER_VERSIONS[name]


def known_reader(name: str) -> bool:
    """Whether a decoder ``name`` is loaded or declared (without importing it)."""
    from medxfer.plugins import declared

    return name in READERS or name in declared("readers")


class ImageDecodeError(OSError):
    """An image file is missing or could not be decoded; the message names it (and its row)."""


def read_grey_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read an image file as a grey float32 ``(H, W)`` array scaled to [0, 1].

    Colour containers with equal channels are read from the first channel; true colour images
    are converted to luminance (ITU-R 601); an alpha channel that is opaque everywhere is
    dropped. 16-bit images keep their range (divided by 65535), 8-bit are divided by 255.

    A path may end in ``#<bits>``, the bits the image was acquired with (a DICOM's
    ``BitsStored``; PadChest's table gives them): a 16-bit image is then divided by
    ``2**b - 1``, ``b`` the larger of those bits and the bit length of its brightest pixel, so a
    12-bit image stored as is fills [0, 1] and one rescaled to 16 bits is read as such.

    Args:
        path: the file (optionally ``<file>#<bits>``).
        context: appended to error messages (e.g. ``"row 12 of train.csv"``).

    Raises:
        ImageDecodeError: missing file, a decoder failure, a side under :data:`MIN_SIDE`,
            transparent pixels or a CMYK image, naming ``path`` and ``context``.
    """
    file, bits = split_member(path)
    if bits.isdigit():
        stored = int(bits)
        return _decode(file, context, lambda img: _to_grey(img, stored), checks=True)
    return _decode(path, context, _to_grey, checks=True)


def read_rgb_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read a colour photograph as float32 ``(H, W, 3)`` in [0, 1] (an opaque alpha dropped,
    grey repeated), for dermatology. Errors as in :func:`read_grey_image`."""
    return _decode(
        path,
        context,
        lambda img: np.asarray(img.convert("RGB"), np.float32) / 255.0,
        checks=True,
    )


def read_label_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """Read a mask / label-map file as its stored integer values ``(H, W)``: never scaled or
    interpolated, so a mask's class values can be checked exactly. 16-bit images keep their
    values (``int32``); palette, 1-bit and colour images are read as 8-bit grey (``uint8``; a
    0/255 palette GIF gives 0 and 255). Errors as in :func:`read_grey_image`, but for its
    size and colour checks: a mask's values are its stored ones, whatever the container, and
    its size is checked against its image's by the segmentation data."""

    def convert(img: Image.Image) -> np.ndarray:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img, dtype=np.int32)
        return np.asarray(img.convert("L"), dtype=np.uint8)

    return _decode(path, context, convert)


def split_member(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(file, member)`` of an image path: ``<file>#<member>`` names one image inside a
    container file (a CIFAR batch record) or a decoding argument (PadChest's bits), the one
    convention the decoders, the image checks and BiT-HyperRule share. A path without ``#``, or
    an existing file whose name holds one, is ``(path, "")``.

    Example:
        >>> split_member("batch_1#7")
        ('batch_1', '7')
    """
    text = str(path)
    file, sep, member = text.rpartition("#")
    if not sep or not file or os.path.isfile(text):
        return text, ""
    return file, member


def where(path: str | os.PathLike[str], context: str = "") -> str:
    """``path``, with ``context`` (e.g. a CSV line) in brackets: how every image error names
    what failed."""
    return f"{path} ({context})" if context else str(path)


def _decode(
    path: str | os.PathLike[str],
    context: str,
    convert: Callable[[Image.Image], np.ndarray],
    checks: bool = False,
) -> np.ndarray:
    """Open an image file with PIL and ``convert`` it, every failure an
    :class:`ImageDecodeError` naming the file and ``context``; with ``checks`` the size (from
    the header, before decoding), colour space and transparency are checked first."""
    if not Path(path).is_file():
        raise ImageDecodeError(f"image not found: {where(path, context)}")
    try:
        with Image.open(path) as img:
            if checks:
                _check_size(img, path, context)
            img.load()
            if checks:
                _check_colour(img, path, context)
            return convert(img)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"could not decode image {where(path, context)}: {err}") from None


def _check_size(img: Image.Image, path: str | os.PathLike[str], context: str) -> None:
    """Refuse an image with a side under :data:`MIN_SIDE` (read from the header only)."""
    width, height = img.size
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(
            f"image {where(path, context)} is {width}x{height} pixels, under the {MIN_SIDE}-pixel "
            "minimum side (a placeholder or a damaged export?)"
        )


def _check_colour(img: Image.Image, path: str | os.PathLike[str], context: str) -> None:
    """Refuse a CMYK image and one with transparent pixels (see the module docstring)."""
    if img.mode == "CMYK":
        raise ImageDecodeError(
            f"image {where(path, context)} is CMYK (a print colour space): converting it needs "
            "its colour profile, which medxfer does not apply. Convert it to grey or RGB with "
            "the profile (e.g. PIL.ImageCms or ImageMagick) and re-save it"
        )
    if not img.has_transparency_data:
        return
    alpha = np.asarray(
        img.getchannel("A") if "A" in img.getbands() else img.convert("RGBA").getchannel("A")
    )
    transparent = int(np.count_nonzero(alpha < 255))
    if transparent:
        raise ImageDecodeError(
            f"image {where(path, context)} has {transparent} transparent pixel(s) of "
            f"{alpha.size} (mode {img.mode}): the values under them are arbitrary and would be "
            "read as if opaque. Flatten it onto a background (or drop the alpha if it means "
            "nothing) and re-save it"
        )


def _to_grey(img: Image.Image, bits: int | None = None) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        if bits is not None:  # the acquisition's bits, or more if the pixels need them
            depth = min(16, max(bits, int(arr.max(initial=0)).bit_length()))
            return np.clip(arr / float(2**depth - 1), 0.0, 1.0)
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
