"""Run-length encoded masks as in the SIIM-ACR pneumothorax challenge (``ImageId,
EncodedPixels``): pixels numbered in column-major order (down the first column, then the next),
1-based starts, ``-1`` for an empty mask.

Two encodings exist in the wild and a table does not say which it uses, so the caller chooses:

* ``relative`` -- the challenge's original ``mask2rle``: each start is counted from the end of
  the previous run (the first from pixel 0);
* ``absolute`` -- every start is the 1-based position of its first pixel (the later,
  Kaggle-standard form).

Several rows of one image are unioned by the reader. Hand-written because no maintained library
decodes the relative form; both are a few lines of NumPy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["RLEError", "rle_decode", "rle_encode"]

Encoding = Literal["relative", "absolute"]


class RLEError(ValueError):
    """A run-length string does not describe a mask of the given size."""


def rle_decode(text: str, shape: tuple[int, int], encoding: Encoding) -> np.ndarray:
    """Decode one run-length string to a bool mask of ``shape`` (H, W).

    Args:
        text: ``"start length start length ..."`` or ``"-1"`` (empty).
        shape: (H, W) of the image.
        encoding: ``relative`` or ``absolute`` (see the module docstring).

    Raises:
        RLEError: an odd number of integers, a non-integer, a negative length or start, or a run
            past the end of the image.

    Example:
        >>> rle_decode("2 2 1 1", (3, 2), "relative").astype(int).tolist()  # pixels 2, 3 and 5
        [[0, 1], [0, 0], [1, 1]]
    """
    h, w = shape
    flat = np.zeros(h * w, dtype=bool)
    text = str(text).strip()
    if text in ("-1", ""):
        return flat.reshape(w, h).T
    try:
        numbers = np.array([int(v) for v in text.split()], dtype=np.int64)
    except ValueError:
        raise RLEError(f"run-length string has a non-integer: {text[:60]!r}") from None
    if len(numbers) % 2:
        raise RLEError(f"run-length string has an odd number of integers ({len(numbers)})")
    starts, lengths = numbers[0::2], numbers[1::2]
    if (lengths < 0).any() or (starts < 0).any():
        raise RLEError("run-length string has a negative start or length")
    if encoding == "relative":
        ends = np.cumsum(starts + lengths)
        begins = ends - lengths
    elif encoding == "absolute":
        if (starts < 1).any():
            raise RLEError("absolute run-length starts are 1-based: a start of 0")
        begins = starts - 1
        ends = begins + lengths
    else:
        raise ValueError(f"encoding must be 'relative' or 'absolute', got {encoding!r}")
    if len(ends) and ends.max() > h * w:
        raise RLEError(f"a run ends at pixel {int(ends.max())}, past the {h}x{w} image")
    for b, e in zip(begins, ends, strict=True):
        flat[b:e] = True
    return flat.reshape(w, h).T


def rle_encode(mask: np.ndarray, encoding: Encoding) -> str:
    """Encode a bool mask (H, W) as a run-length string (``"-1"`` when empty); the inverse of
    :func:`rle_decode`."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    begins, ends = edges[0::2], edges[1::2]
    if not len(begins):
        return "-1"
    lengths = ends - begins
    if encoding == "absolute":
        starts = begins + 1
    elif encoding == "relative":
        starts = begins - np.concatenate([[0], ends[:-1]])
    else:
        raise ValueError(f"encoding must be 'relative' or 'absolute', got {encoding!r}")
    return " ".join(f"{s} {n}" for s, n in zip(starts, lengths, strict=True))
