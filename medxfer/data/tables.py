"""Validation helpers for metadata tables, so that every reader reports bad input the same
way: the file, the CSV line (header = line 1) and the column."""

from __future__ import annotations

import ast
from collections.abc import Iterable

import pandas as pd

__all__ = ["TableError", "check_columns", "csv_line", "parse_differential"]


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


def parse_differential(text: str, where: str) -> dict[str, float]:
    """``"A:0.6|B:0.4"``, ``"{'A': 0.6, 'B': 0.4}"`` or a single ``"A"`` -> weights summing to 1.

    Raises:
        TableError: the text does not parse, a weight is negative or not a number, or the
            weights do not sum to 1 (± 0.01); the message names ``where``.
    """
    text = str(text).strip()
    if not text:
        raise TableError(f"{where}: empty differential")
    try:
        if text.startswith("{"):
            raw = ast.literal_eval(text)
            if not isinstance(raw, dict):
                raise ValueError("not a dict")
            weights = {str(k).strip(): float(v) for k, v in raw.items()}
        elif ":" in text:
            weights = {}
            for part in text.split("|"):
                name, _, w = part.rpartition(":")
                if not name.strip():
                    raise ValueError(f"no condition name in {part!r}")
                weights[name.strip()] = weights.get(name.strip(), 0.0) + float(w)
        else:
            weights = {text: 1.0}
    except (ValueError, SyntaxError) as err:
        raise TableError(f"{where}: differential {text!r} does not parse ({err})") from None
    if any(w < 0 or w != w for w in weights.values()):
        raise TableError(f"{where}: differential {text!r} has a negative or missing weight")
    total = sum(weights.values())
    if abs(total - 1.0) > 0.01:
        raise TableError(f"{where}: differential weights sum to {total:.4f}, not 1: {text!r}")
    return {k: v / total for k, v in weights.items()}
