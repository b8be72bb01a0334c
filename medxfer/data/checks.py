"""Image checks of a table before training: every image exists (and decodes, when asked), or
its rows are dropped, counted and logged when the user asked for that (``skip_bad_images``);
otherwise the first bad files are one error naming file and table line. Decoding runs in a
thread pool (the decoders release the GIL).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from medxfer.data.cache import FileImages, ImageSource
from medxfer.data.images import ImageDecodeError

__all__ = ["check_images", "image_rows"]

log = logging.getLogger(__name__)


def image_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per image file of a table: ``path``, ``line``, ``source`` and ``row``, the
    position of its row in ``table``. Single-image tables have a ``path`` column; case tables
    (exams, derm cases) a ``paths`` list per row, where ``""`` marks a missing view."""
    if "path" in table.columns:
        out = table[["path", "line", "source"]].assign(row=np.arange(len(table)))
    else:
        out = table[["paths", "line", "source"]].assign(row=np.arange(len(table)))
        out = out.explode("paths").rename(columns={"paths": "path"})
        out = out[out["path"].notna() & (out["path"] != "")]
    return out.reset_index(drop=True)


def check_images(
    table: pd.DataFrame,
    skip_bad: bool,
    decode: bool,
    what: str,
    images: ImageSource | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """The rows of ``table`` whose images all exist (and decode, when ``decode``).

    Without ``skip_bad`` the first bad files raise, naming file and CSV line; with it the rows
    holding them are dropped, counted and logged. ``images`` is where they are read from
    (default: their files, as grey); with a cache, "exists" means "prepared without error"
    (the cache decoded every image when it was built). Decoding runs in ``workers`` threads.
    """
    images = images or FileImages("grey")
    files = image_rows(table)
    bad: list[str] = []
    keep = np.ones(len(table), dtype=bool)
    decode = decode or skip_bad

    def check(path: str, line: int, src: str) -> str | None:
        try:
            images.check(path, context=f"line {line} of {src}", decode=decode)
        except ImageDecodeError as err:
            return str(err)
        return None

    rows = list(files.itertuples(index=False))
    threads = max(1, min(workers, len(rows))) if decode else 1
    with ThreadPoolExecutor(threads) as pool:  # decoders release the GIL while they decode
        step = 256 * threads  # stop soon after the first bad files when they are an error
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            for (*_, row), error in zip(
                chunk, pool.map(lambda r: check(r[0], r[1], r[2]), chunk), strict=True
            ):
                if error is not None:
                    keep[row] = False
                    bad.append(error)
            if not skip_bad and len(bad) >= 5:
                break
    if bad and not skip_bad:
        raise ImageDecodeError(
            f"{what}: {len(bad)}{'+' if len(bad) >= 5 else ''} bad image(s); first: "
            + "; ".join(bad[:5])
            + ". Fix the files or set skip_bad_images=true to skip (and count) them."
        )
    if bad:
        log.warning(
            "%s: skipped %d row(s) of %d with a bad image; first: %s",
            what,
            len(table) - int(keep.sum()),
            len(table),
            bad[0],
        )
    out = table[keep]
    if out.empty:
        raise ImageDecodeError(
            f"{what}: no images left after skip_bad_images dropped {len(bad)} bad file(s); "
            f"first: {bad[0]}"
        )
    return out
