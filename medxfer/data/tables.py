"""Validation helpers for metadata tables, so that every reader reports bad input the same
way: the file, the CSV line (header = line 1) and the column."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

__all__ = ["TableError", "check_columns", "csv_line"]


class TableError(ValueError):
    """A metadata table is malformed; the message names the file, line and column."""


def csv_line(index: int) -> int:
    """The 1-based line of data row ``index`` (0-based) in a CSV file with one header line."""
    return int(index) + 2


def check_columns(df: pd.DataFrame, required: Iterable[str], source: str) -> None:
    """Raise :class:`TableError` listing expected and found columns when any is missing."""
    required = list(required)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TableError(
            f"{source}: missing required column(s) {missing}. Expected {required}; "
            f"found {list(df.columns)}"
        )
