"""Reading radiographs (mammograms, chest X-rays) from DICOM as one float plane.

Display pipeline of the DICOM standard (PS3.3 C.11): stored values -> modality LUT (rescale
slope / intercept, or a Modality LUT) -> VOI LUT, or window (``VOILUTFunction`` LINEAR,
LINEAR_EXACT or SIGMOID) -> presentation, where MONOCHROME1 means "bright is low", so it is
inverted here to MONOCHROME2's "bright is dense".

The LUTs and the window are pydicom's (:func:`pydicom.pixels.apply_modality_lut`,
:func:`~pydicom.pixels.apply_windowing`, :func:`~pydicom.pixels.apply_voi`), with their
semantics and their checks (e.g. a LINEAR window narrower than 1 is refused, PS3.3
C.11.2.1.2.1). medxfer adds the choice between them (a VOI LUT before a window, as pydicom's
``apply_voi_lut``), the scaling of their output range onto [0, 1], the MONOCHROME1 inversion and
errors that name the file. 12/16-bit values stay float; the result is float32 ``(H, W)`` in
[0, 1].

Compressed transfer syntaxes other than RLE, JPEG baseline / extended and JPEG 2000 (which
pydicom and Pillow decode) need decoder plugins: ``pip install 'medxfer[dicom]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .images import ImageDecodeError, reader_version, where

__all__ = ["read_dicom"]

#: What to install for the compressed transfer syntaxes that need a decoder plugin.
_INSTALL_EXTRA = "pip install 'medxfer[dicom]'"


def _check_decoder(ds: Any, what: str) -> None:
    """Refuse, naming the file, the transfer syntax and the extra to install, a file whose pixel
    data pydicom cannot decode for want of a plugin (or at all)."""
    from pydicom.pixels import get_decoder

    tsyntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if tsyntax is None or "PixelData" not in ds:
        return  # pydicom's own error (guessed syntax, no pixel data) says it better
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise ImageDecodeError(
            f"DICOM {what}: transfer syntax {tsyntax.name} ({tsyntax}) is not supported by pydicom"
        ) from None
    if not decoder.is_available:
        raise ImageDecodeError(
            f"DICOM {what}: transfer syntax {tsyntax.name} ({tsyntax}) needs a decoder plugin "
            f"that is not installed: {_INSTALL_EXTRA}"
        )


def _window(x: np.ndarray, ds: Any) -> np.ndarray:
    """pydicom's window (PS3.3 C.11.2.1.2-3, the first of several) onto [0, 1].

    pydicom maps onto its output range ``[y_min, y_max]`` (from Bits Stored, Pixel
    Representation and the modality LUT); medxfer rescales that range onto [0, 1]. The range is
    read from pydicom itself, as where it sends -inf and +inf, so the two never disagree.
    """
    from pydicom.pixels import apply_windowing

    with np.errstate(over="ignore"):  # SIGMOID far from its centre: exp overflows to the limit
        y = apply_windowing(x, ds)
        y_min, y_max = apply_windowing(np.array([-np.inf, np.inf]), ds)
    return (y - y_min) / (y_max - y_min)


def _voi_lut(x: np.ndarray, ds: Any) -> np.ndarray:
    """pydicom's VOI LUT (PS3.3 C.11.2.1.1, the first of several) onto [0, 1] by the LUT's
    nominal output range ``2**bits - 1``.

    pydicom 3.0 holds the LUT index in the LUT's own dtype, so an 8-bit LUT wraps every index
    above 255 (a LUT of more than 256 entries, or inputs beyond a short LUT's last entry). So
    medxfer clamps the input to the LUT's domain (what the standard and pydicom do with values
    outside it) and hands pydicom an 8-bit LUT declared as 16-bit: the same entries in a wider
    type. Non-integer inputs (a fractional rescale) are floored onto the LUT's integer inputs.
    """
    from pydicom.pixels import apply_voi

    item = ds.VOILUTSequence[0]
    n_entries, first, bits = (int(v) for v in item.LUTDescriptor)
    n_entries = n_entries or 2**16  # PS3.3 C.11.2.1.1: 0 means 65536
    if bits == 8:
        item.LUTDescriptor = [item.LUTDescriptor[0], item.LUTDescriptor[1], 16]
    index = np.clip(np.floor(x), first, first + n_entries - 1).astype(np.int64)
    return apply_voi(index, ds).astype(np.float64) / float(2**bits - 1)


@reader_version(2)  # version 2: the VOI LUT function, 8-bit VOI LUTs and Window Width 1 fixes
def read_dicom(
    path: str | os.PathLike[str], context: str = "", apply_window: bool = True
) -> np.ndarray:
    """Read a single-frame grey DICOM image as float32 ``(H, W)`` in [0, 1].

    Args:
        path: the file.
        context: appended to error messages (e.g. the exam list's line).
        apply_window: apply the VOI LUT or else the window stored in the file (else scale the
            modality values by their range).

    Raises:
        ImageDecodeError: missing file, not DICOM, no pixel data, a compressed transfer syntax
            whose decoder plugin is not installed, a decoder failure, or a VOI LUT or window the
            standard does not allow (e.g. Window Width 0); the message names the file.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    what = where(path, context)
    if not Path(path).is_file():
        raise ImageDecodeError(f"image not found: {what}")
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"could not decode DICOM {what}: {err}") from None
    _check_decoder(ds, what)
    try:
        stored = ds.pixel_array
    except Exception as err:
        raise ImageDecodeError(f"could not decode DICOM {what}: {err}") from None
    if stored.ndim != 2:
        raise ImageDecodeError(
            f"DICOM {what}: expected one grey frame, got pixel array of shape {stored.shape}"
        )
    x = apply_modality_lut(stored, ds)
    voi_lut = ds.get("VOILUTSequence")
    try:
        if apply_window and voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
            x = _voi_lut(x, ds)
        elif apply_window and None not in (ds.get("WindowCenter"), ds.get("WindowWidth")):
            x = _window(x, ds)
        else:
            x = x.astype(np.float64)
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    except (ValueError, NotImplementedError) as err:  # pydicom's checks of the VOI module
        raise ImageDecodeError(f"DICOM {what}: {err}") from None
    x = np.clip(x, 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        x = 1.0 - x
    return x.astype(np.float32)


# version 2: the VOI LUT function (SIGMOID, LINEAR_EXACT), 8-bit VOI LUTs beyond 256 entries
# and Window Width 1 changed the pixels of some files; caches of version 1 are refused.
