"""Operations on the text columns of a metadata table, for readers of 100k-row tables.

pandas' string methods work on any storage and pay for it: they decode UTF-8 to cut by
characters, broadcast a scalar through one Python reference per row, and wrap pyarrow's
kernels in checks. A real CheXpert ``train.csv`` (223,414 rows) or NIH ``Data_Entry`` table
(112,120 rows) is ASCII, and with pyarrow installed pandas stores its text in pyarrow arrays.
Each function here does what its pandas counterpart does (the result is equal, with the
column's dtype and index), and on such columns works on pyarrow's kernels or, for values of
one width in bytes (codes such as ``M`` / ``F`` or ``PA`` / ``AP``, NIH's image names), on
the bytes as a numpy array: an integer per row to hash instead of a string, one copy of a
byte block instead of a concatenation per string. Other columns (pandas' ``python`` storage,
pandas without pyarrow) take the pandas way. docs/performance.md has the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "arrow_backed",
    "factorize_text",
    "fixed_width",
    "is_unique",
    "prefix_text",
    "remove_suffix",
    "repeat_text",
    "slice_text",
    "strip_text",
    "take_text",
]


def arrow_backed(text: pd.Series) -> bool:
    """Whether pyarrow stores a text column (pandas' default ``str`` when it is installed)."""
    return isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow"


def _column(text: pd.Series) -> pd.Series | None:
    """``text`` when this module's pyarrow paths apply to it: stored by pyarrow, not empty."""
    return text if arrow_backed(text) and len(text) else None


def _series(values: object, like: pd.Series) -> pd.Series:
    """A pyarrow array of text as a column with ``like``'s dtype, index and name (no copy)."""
    return pd.Series(pd.array(values, dtype=like.dtype), index=like.index, name=like.name)


def _one_array(text: pd.Series) -> object:
    """The pyarrow array behind a pyarrow-stored column, in one piece (a column of several
    chunks, as a parallel parse leaves it, is concatenated once)."""
    import pyarrow as pa  # there: the column is stored by it

    values = pa.array(text.array)
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def _rows_of(values: object) -> np.ndarray | None:
    """:func:`fixed_width` of one pyarrow array."""
    import pyarrow as pa  # there: only called for arrays of it

    assert isinstance(values, pa.Array)
    if values.null_count or not (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        return None
    kind = np.int64 if pa.types.is_large_string(values.type) else np.int32
    _, offset_buffer, data_buffer = values.buffers()
    size = np.dtype(kind).itemsize
    offsets = np.frombuffer(offset_buffer, kind, len(values) + 1, values.offset * size)
    width = int(offsets[1] - offsets[0])
    if width < 1 or (offsets[1:] - offsets[:-1] != width).any():
        return None
    data = np.frombuffer(data_buffer, np.uint8, len(values) * width, int(offsets[0]))
    return data.reshape(len(values), width)


def fixed_width(text: pd.Series) -> np.ndarray | None:
    """The UTF-8 bytes of a text column whose values all have one length in bytes (at least
    1), as a read-only ``(rows, width)`` uint8 array over pyarrow's buffer, or None: another
    storage, a missing value or values of different lengths.

    Example:
        >>> fixed_width(pd.Series(["PA", "AP"])).tolist()
        [[80, 65], [65, 80]]
    """
    return None if _column(text) is None else _rows_of(_one_array(text))


def _words(rows: np.ndarray) -> np.ndarray:
    """A ``(rows, width)`` uint8 array whose rows are contiguous, viewed as the widest unsigned
    integers (8, 4 or 2 bytes) that divide ``width``: numpy compares and copies 4-byte
    elements about 10x faster than single bytes of a strided array."""
    for size in (8, 4, 2):
        if rows.shape[1] % size == 0:
            return rows.view(f"<u{size}")
    return rows


def _from_bytes(rows: np.ndarray, like: pd.Series) -> pd.Series:
    """A text column holding each row of a ``(rows, width)`` array (UTF-8 text of one width,
    as bytes or :func:`_words`), with ``like``'s dtype and index."""
    import pyarrow as pa  # there: only called for columns it stores

    rows = np.ascontiguousarray(rows).view(np.uint8)
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)[: n + 1]
    values = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(rows))
    return _series(values, like)


def factorize_text(text: pd.Series) -> tuple[np.ndarray, list[str]]:
    """``pd.factorize`` of a text column with no missing values: the code of each row (in
    order of first appearance) and the distinct values.

    Values of one width up to 8 bytes are hashed as integers (3x cheaper than as strings);
    other pyarrow-stored columns go to pyarrow's hash kernel directly, without the ~30 %
    ``pd.factorize`` adds around the same kernel.

    Example:
        >>> codes, values = factorize_text(pd.Series(["PA", "AP", "PA"]))
        >>> codes.tolist(), values
        ([0, 1, 0], ['PA', 'AP'])
    """
    rows = fixed_width(text)
    if rows is not None and rows.shape[1] <= 8:
        width = rows.shape[1]
        if width in (1, 2, 4, 8):
            keys = rows.view(f"<u{width}").ravel()
        else:
            padded = np.zeros((len(rows), 8), dtype=np.uint8)
            padded[:, :width] = rows
            keys = padded.view("<u8").ravel()
        codes, uniques = pd.factorize(keys)
        distinct = np.asarray(uniques, dtype=keys.dtype).view(np.uint8).reshape(len(uniques), -1)
        return codes, [bytes(u[:width]).decode("utf-8") for u in distinct]
    if _column(text) is not None:
        import pyarrow as pa  # there: the column is stored by it
        import pyarrow.compute as pc

        values = pa.array(text.array)
        if values.null_count == 0:
            encoded = pc.dictionary_encode(values)
            # a chunked column: every chunk holds the whole dictionary
            chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
            codes = np.concatenate([c.indices.to_numpy() for c in chunks])
            return codes.astype(np.intp, copy=False), chunks[-1].dictionary.to_pylist()
    codes, uniques = pd.factorize(text)
    return codes, [str(u) for u in uniques.tolist()]


#: Bytes that may begin or end a value ``str.strip`` changes: ASCII controls and space, and
#: every non-ASCII byte (part of a character that may be Unicode whitespace).
_MAY_BE_SPACE = np.array([b <= 0x20 or b >= 0x7F for b in range(256)])


def strip_text(text: pd.Series) -> pd.Series:
    """``text.str.strip()``; a column of one width whose values neither begin nor end with
    whitespace (NIH's image names) keeps its strings, in one piece, so that the functions
    called on it next (:func:`prefix_text`, :func:`remove_suffix`) read its bytes in place."""
    if _column(text) is not None:
        values = _one_array(text)
        rows = _rows_of(values)
        if rows is not None and not (
            _MAY_BE_SPACE[rows[:, 0]].any() or _MAY_BE_SPACE[rows[:, -1]].any()
        ):
            return _series(values, text)
    return text.str.strip()


def take_text(values: Sequence[str], codes: np.ndarray, like: pd.Series) -> pd.Series:
    """A text column holding ``values[codes]``, with ``like``'s dtype and index; values of one
    width (NIH's ``PA`` / ``AP``) are gathered as rows of bytes."""
    encoded = [v.encode("utf-8") for v in values]
    width = len(encoded[0]) if encoded else 0
    if _column(like) is not None and width and all(len(e) == width for e in encoded):
        table = np.frombuffer(b"".join(encoded), dtype=np.uint8).reshape(len(encoded), width)
        return _from_bytes(table[codes], like).rename(None)
    return pd.Series(pd.array(list(values), dtype=like.dtype).take(codes), index=like.index)


def repeat_text(value: str, like: pd.Series) -> pd.Series:
    """A text column holding ``value`` on every row, with ``like``'s dtype and index (pandas
    broadcasts the string through a Python reference per row: 3 ms for 223k rows, 10x this)."""
    if _column(like) is None:  # ``like`` may be ``object`` (no row): then pandas' text dtype
        dtype = like.dtype if isinstance(like.dtype, pd.StringDtype) else None
        return pd.Series(value, index=like.index, name=like.name, dtype=dtype)
    import pyarrow as pa  # there: the column is stored by it

    return _series(pa.repeat(pa.scalar(value, pa.large_string()), len(like)), like)


def prefix_text(prefix: str, text: pd.Series) -> pd.Series:
    """``prefix + text``; values of one width are copied as one byte block (NIH's image names
    under their folder: 3x cheaper than pyarrow's concatenation)."""
    rows = fixed_width(text)
    if rows is None:
        return prefix + text
    head = np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8)
    out = np.empty((len(rows), len(head) + rows.shape[1]), dtype=np.uint8)
    out[:, : len(head)] = head
    out[:, len(head) :] = rows
    return _from_bytes(out, text)


def remove_suffix(text: pd.Series, suffix: str) -> pd.Series:
    """``text.str.removesuffix(suffix)``; when every value ends in the suffix, by cutting its
    bytes off (NIH's ``.png``: one copy of a byte block for names of one width)."""
    end = suffix.encode("utf-8")
    rows = fixed_width(text)
    if rows is not None and rows.shape[1] > len(end) and end:
        tails = _words(rows[:, -len(end) :])  # ".png": one 4-byte number per row
        if (tails == _words(np.frombuffer(end, dtype=np.uint8)[None])).all():
            return _from_bytes(_words(rows[:, : -len(end)]), text)
    elif _column(text) is not None and end:
        import pyarrow as pa  # there: the column is stored by it
        import pyarrow.compute as pc

        values = pa.array(text.array)
        if pc.all(pc.ends_with(values, suffix)).as_py():
            cut = pc.binary_slice(values.cast(pa.large_binary()), 0, -len(end))
            return _series(cut.cast(pa.large_string()), text)
    return text.str.removesuffix(suffix)


def slice_text(text: pd.Series, start: int, stop: int | None = None, *, ascii: bool) -> pd.Series:
    """``text.str.slice(start, stop)`` (``start``, ``stop`` >= 0). When the table is ASCII
    (``ascii``: characters are bytes), by pyarrow's ``binary_slice`` on the bytes: about 10x
    cheaper than pandas' slicing by characters, which decodes UTF-8 (15 ms for 223k paths)."""
    if not ascii or _column(text) is None:
        return text.str.slice(start, stop)
    import pyarrow as pa  # there: the column is stored by it
    import pyarrow.compute as pc

    raw = pa.array(text.array).cast(pa.large_binary())
    if stop is None:  # binary_slice needs a bound; the longest value is one
        stop = max(start, pc.max(pc.binary_length(raw)).as_py() or 0)
    return _series(pc.binary_slice(raw, start, stop).cast(pa.large_string()), text)


def is_unique(text: pd.Series) -> bool:
    """Whether no value of a text column repeats. A column in strictly increasing order (NIH's
    ``Image Index``: the real table is sorted by it) is checked by one comparison of
    neighbours, about 15x cheaper than hashing every value; otherwise by hashing."""
    if _column(text) is not None:
        import pyarrow as pa  # there: the column is stored by it
        import pyarrow.compute as pc

        values = pa.array(text.array)
        if pc.all(pc.less(values[:-1], values[1:]), skip_nulls=False).as_py() is True:
            return True
    return bool(text.is_unique)
