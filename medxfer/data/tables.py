"""Validation helpers for metadata tables, so that every reader reports bad input the same
way (the file, the CSV line, header = line 1, and the column) and checks the values every
dataset shares (sex, age, repeated rows, class names) by the same rules."""

from __future__ import annotations

import ast
import difflib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .text import factorize_text

__all__ = [
    "MAX_AGE",
    "SEX_VALUES",
    "TableError",
    "check_age",
    "check_columns",
    "check_duplicates",
    "close_names",
    "csv_line",
    "near_duplicate_names",
    "normalise_sex",
    "parse_differential",
]

log = logging.getLogger(__name__)


class TableError(ValueError):
    """A metadata table is malformed; the message names the file, line and column."""


def csv_line(index: int) -> int:
    """The 1-based line of data row ``index`` (0-based) in a CSV file with one header line."""
    return int(index) + 2


def check_columns(df: pd.DataFrame | Sequence[str], required: Iterable[str], source: str) -> None:
    """Raise :class:`TableError` listing expected and found columns when any is missing.

    ``df`` is the table or its column names (a header read before the table is)."""
    required = list(required)
    found = list(df.columns if isinstance(df, pd.DataFrame) else df)
    missing = [c for c in required if c not in found]
    if missing:
        raise TableError(
            f"{source}: missing required column(s) {missing}. Expected {required}; found {found}"
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


# --- values every reader checks the same way ---------------------------------------------------

#: Sex values every reader accepts (compared stripped and case-insensitively) -> the table's
#: value: CheXpert writes ``Female`` / ``Male`` / ``Unknown``, NIH ChestX-ray14 and DICOM
#: ``PatientSex`` ``F`` / ``M``, SCIN ``FEMALE`` / ``MALE``; blank is unknown.
SEX_VALUES: dict[str, str] = {
    "f": "Female",
    "female": "Female",
    "m": "Male",
    "male": "Male",
    "": "Unknown",
    "unknown": "Unknown",
}
#: The oldest plausible age in years; ages outside ``[0, MAX_AGE]`` are errors.
MAX_AGE = 120.0


def normalise_sex(
    values: pd.Series,
    where: Callable[[int], str],
    unknown: bool = False,
) -> pd.Series:
    """Sex values through :data:`SEX_VALUES` -> ``Female`` / ``Male`` / ``Unknown``: the one
    place a table's sex column is read, so every dataset gets the same subgroups.

    Works on the distinct values (a few per table), not per row.

    Args:
        values: the column as read (text; NaN is blank).
        where: row position -> ``"<file>, line <n>, column '<name>'"`` for messages.
        unknown: read a value outside the list as ``Unknown`` (counted and logged) instead of
            failing.

    Raises:
        TableError: a value outside :data:`SEX_VALUES` (unless ``unknown``), naming the file,
            line and column.

    Example:
        >>> normalise_sex(pd.Series(["F", "male", ""]), str).tolist()
        ['Female', 'Male', 'Unknown']
    """
    text = values.fillna("").astype(str)
    codes, uniques = factorize_text(text)
    mapped = [SEX_VALUES.get(v.strip().lower()) for v in uniques]
    bad = [k for k, m in enumerate(mapped) if m is None]
    if bad:
        i = int(np.flatnonzero(np.isin(codes, bad))[0])
        if not unknown:
            raise TableError(
                f"{where(i)}: sex {text.iloc[i]!r} is not one of F, M, Female, Male (any case), "
                "Unknown or blank; set unknown_sex: true to read other values as Unknown"
            )
        counts = {uniques[k]: int((codes == k).sum()) for k in bad}
        log.warning("sex value(s) read as Unknown (unknown_sex): %s; first at %s", counts, where(i))
    out = pd.array([m or "Unknown" for m in mapped], dtype=text.dtype).take(codes)
    return pd.Series(out, index=values.index, name=values.name)


def check_age(ages: pd.Series | np.ndarray, where: Callable[[int], str]) -> None:
    """Raise :class:`TableError` for the first age (years; NaN is unknown) outside
    ``[0, MAX_AGE]``, naming the file, line and column through ``where(row position)``."""
    a = np.asarray(ages, dtype=float)
    bad = (a < 0) | (a > MAX_AGE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"{where(i)}: age {a[i]:g} is outside [0, {MAX_AGE:g}] years")


def check_duplicates(
    table: pd.DataFrame,
    key: Sequence[str],
    lines: Sequence[int] | np.ndarray,
    source: str,
    what: str,
    drop: bool = False,
    compare: Sequence[str] | None = None,
) -> np.ndarray:
    """Which rows to keep when several rows hold the same ``key`` (the same image or case).

    Without ``drop`` a repeated key is an error naming the file, its lines and the key. With
    ``drop`` the later copies are dropped (counted and logged) when they equal the first in
    the ``compare`` columns; copies that differ stay an error, since
    neither can be chosen silently.

    Args:
        table: the rows.
        key: the columns that identify a row's image or case.
        lines: the file line of each row (for messages).
        source: the file (for messages).
        what: what a key names (``"image"``, ``"case"``).
        drop: drop identical copies instead of failing.
        compare: the columns two copies must agree in to be dropped (default: every column
            but ``line``).

    Returns:
        A boolean mask, True for the rows to keep.

    Raises:
        TableError: a repeated key (unless ``drop`` and the copies agree).
    """
    key = list(key)
    repeated = table.duplicated(subset=key, keep=False).to_numpy()
    if not repeated.any():
        return np.ones(len(table), dtype=bool)
    lines = np.asarray(lines)
    cols = (
        list(compare)
        if compare is not None
        else [c for c in table.columns if c not in ("line", "_line")]
    )
    copy = table.duplicated(subset=key, keep="first").to_numpy()
    same = table.duplicated(subset=list(dict.fromkeys([*key, *cols])), keep="first").to_numpy()
    conflict = copy & ~same
    if drop and not conflict.any():
        log.warning(
            "%s: dropped %d repeated row(s) of the same %s (drop_duplicates)",
            source,
            int(copy.sum()),
            what,
        )
        return ~copy
    i = int(np.flatnonzero(conflict if drop else copy)[0])
    match = (table[key] == table[key].iloc[i]).all(axis=1).to_numpy()
    at = ", ".join(str(n) for n in lines[match][:5])
    value = ", ".join(f"{k}={table[k].iloc[i]!r}" for k in key)
    hint = (
        "; the copies differ, so neither can be dropped: fix the table"
        if drop
        else "; remove the copies, or set drop_duplicates: true to drop identical ones (counted)"
    )
    raise TableError(f"{source}: lines {at} hold the same {what} ({value}){hint}")


def close_names(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` naming the known name closest to ``name`` (difflib), or ``""``
    when none is close: the suggestion every message about an unknown class name carries."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def near_duplicate_names(counts: Mapping[str, float]) -> list[tuple[str, str]]:
    """Pairs ``(rare, common)`` of names in ``counts`` (name -> how often it occurs) that look
    like a misspelling of a more frequent one (difflib ratio >= 0.85, e.g. ``Eczma`` and
    ``Eczema``): what a reader warns about when no list of names was declared."""
    names = sorted(counts, key=lambda n: (-counts[n], n))
    pairs = []
    for k, name in enumerate(names[1:], start=1):
        close = difflib.get_close_matches(name, names[:k], n=1, cutoff=0.85)
        if close and counts[close[0]] > counts[name]:
            pairs.append((name, close[0]))
    return pairs
