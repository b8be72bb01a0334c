"""medxfer.data.text against the pandas method each function stands for, on both string
storages and on the column shapes pyarrow produces (one chunk, several chunks, a slice with an
offset), with values of one byte width (the numpy paths) and of mixed widths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medxfer.data.text import (
    factorize_text,
    fixed_width,
    is_unique,
    prefix_text,
    remove_suffix,
    repeat_text,
    slice_text,
    strip_text,
    take_text,
)

pa = pytest.importorskip("pyarrow")

VALUES = {
    "one-byte-codes": ["M", "F", "M", "F", "M"],
    "two-byte-codes": ["PA", "AP", "AP", "PA"],
    "width-7-codes": ["Frontal", "Lateral", "Frontal"],
    "width-3-padded": ["abc", "abd", "abc", "abd"],
    "mixed-widths": ["Male", "Female", "", "Unknown", "Male"],
    "nih-names": ["00000001_000.png", "00000001_001.png", "00000002_000.png"],
    "one-width-non-ascii": ["é1", "a12", "é1", "ab\u00e9"[:3]],  # 3 bytes each, 2 or 3 chars
    "whitespace": [" M", "F ", "\tx", "y\x1c", "\u00a0z", "q\u3000", "ok"],
    "one-width-whitespace": [" ab", "ab ", "abc", "\x1cab"],
    "one-width-tab": ["abc", "\tab", "abc"],
    "one-width-control": ["abc", "ab\x1c"],
    "one-width-unicode-space": ["abc", "\u00a0a"],  # 3 bytes each
    "one-row": ["00000001_000.png"],
    "empty": [],
}


def _column(values: list[str], layout: str) -> pd.Series:
    """A text column of ``values`` in a storage / pyarrow layout."""
    if layout == "python":
        return pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan), name="c")
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    if layout == "chunked" and len(values) > 1:
        half = len(values) // 2
        array = pa.chunked_array([values[:half], values[half:]], type=pa.large_string())
    elif layout == "sliced":  # an array whose data starts at an offset
        array = pa.array(["padding", *values], type=pa.large_string()).slice(1)
    elif layout == "small-string":
        array = pa.array(values, type=pa.string())
    else:
        array = pa.array(values, type=pa.large_string())
    return pd.Series(pd.array(array, dtype=dtype), name="c")


LAYOUTS = ["one-chunk", "chunked", "sliced", "small-string", "python"]
CASES = [pytest.param(name, layout, id=f"{name}-{layout}") for name in VALUES for layout in LAYOUTS]


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_factorize_text_is_pandas_factorize(name: str, layout: str) -> None:
    column = _column(VALUES[name], layout)
    codes, uniques = factorize_text(column)
    want_codes, want_uniques = pd.factorize(pd.Series(VALUES[name], dtype=object))
    assert codes.tolist() == want_codes.tolist()
    assert uniques == list(want_uniques)


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_fixed_width_holds_the_utf8_bytes_of_one_width(name: str, layout: str) -> None:
    values = VALUES[name]
    encoded = [v.encode("utf-8") for v in values]
    one_width = bool(encoded) and len({len(e) for e in encoded}) == 1 and len(encoded[0]) > 0
    rows = fixed_width(_column(values, layout))
    if layout == "python" or not one_width:
        assert rows is None
    else:
        assert rows is not None
        assert [bytes(r) for r in rows] == encoded


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_strip_prefix_suffix_slice_are_the_pandas_methods(name: str, layout: str) -> None:
    column = _column(VALUES[name], layout)
    pd.testing.assert_series_equal(strip_text(column), column.str.strip())
    for prefix in ["/data/images/", "Données/"]:
        pd.testing.assert_series_equal(prefix_text(prefix, column), prefix + column)
    for suffix in [".png", "0.png", "1", "é1", "x"]:
        pd.testing.assert_series_equal(
            remove_suffix(column, suffix), column.str.removesuffix(suffix)
        )
    ascii = all(v.isascii() for v in VALUES[name])
    for start, stop in [(0, 1), (1, 3), (2, None), (0, 40)]:
        pd.testing.assert_series_equal(
            slice_text(column, start, stop, ascii=ascii), column.str.slice(start, stop)
        )


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_take_repeat_unique_are_the_pandas_ways(name: str, layout: str) -> None:
    column = _column(VALUES[name], layout)
    assert is_unique(column) == column.is_unique
    assert is_unique(column.sort_values()) == column.is_unique
    repeated = repeat_text("/data/train.csv", column)
    assert repeated.tolist() == ["/data/train.csv"] * len(column)
    assert repeated.dtype == column.dtype and repeated.index.equals(column.index)
    codes = np.arange(len(column))[::-1] % 3
    for table in (["PA", "AP", "LL"], ["Male", "Female", ""], ["é", "ab", "c"]):
        taken = take_text(table, codes, column)
        assert taken.tolist() == [table[c] for c in codes]
        assert taken.dtype == column.dtype and taken.index.equals(column.index)
