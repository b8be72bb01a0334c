"""Metadata tables: the one opener every reader uses, and the checks every reader shares.

:func:`read_table` opens a table the same way for every dataset family (plain or
gzip-compressed CSV, TSV or Parquet; UTF-8 with or without a byte-order mark) and gives each
row the physical line of the file it starts on, so that every reader's errors say "file,
line N, column C" -- correct after blank lines and with quoted cells that span several lines
(the real PadChest table has 5,864). The checks below report bad input the same way and check
the values every dataset shares (sex, age, repeated rows, class names) by the same rules.
"""

from __future__ import annotations

import ast
import csv
import difflib
import gzip
import io
import logging
import os
import warnings
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "MAX_AGE",
    "SEX_VALUES",
    "Table",
    "TableError",
    "check_age",
    "check_columns",
    "check_duplicates",
    "close_names",
    "near_duplicate_names",
    "normalise_sex",
    "parse_differential",
    "read_table",
]

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"


class TableError(ValueError):
    """A metadata table is malformed; the message names the file, line and column."""


# --- the one opener --------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table as :func:`read_table` opened it.

    Attributes:
        frame: the rows, one column per header name (index ``0..n-1``).
        lines: the 1-based physical line of the file each row starts on (the header is line
            1); for Parquet, which has no lines, the 1-based row number.
        source: the file, as messages name it.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    source: str


def read_table(
    path: str | os.PathLike[str],
    *,
    required: Iterable[str] | Callable[[list[str]], Iterable[str]] = (),
    numeric: Collection[str] = (),
    text: Collection[str] | None = None,
    split_header: Callable[[str], list[str]] | None = None,
    trailing_empty: bool = False,
    skipinitialspace: bool = False,
) -> Table:
    """Open a metadata table: the one way every reader reads its file.

    CSV (``,``) or TSV (``\\t``, a name ending in ``.tsv`` or ``.tsv.gz``), plain or
    gzip-compressed (recognised by its content, whatever its name), in UTF-8 (a byte-order
    mark is dropped); or Parquet (a name ending in ``.parquet``: every column read as text).
    Blank lines are skipped, as pandas does; every other row must have the header's number of
    fields (pandas pads a short row silently, so this is checked here). A table without rows
    (a header only, or an empty file) is an error: no reader can use one, and the message
    of whatever failed next would blame something else (a filter, a split).

    pandas parses the rows; two things are done by hand because neither pandas nor the csv
    module gives them cheaply. The physical line of each row: pandas does not report it, and
    the csv module (whose ``line_num`` does) parses ~5x slower than pandas, so it is used only
    where a row may not be one line -- a file with a quote character (a quoted cell may span
    lines) or with blank lines; otherwise row ``i`` is on line ``i + 2``, which the line and
    separator counts of the file confirm (and with them that no row is short). The UTF-8 check
    decodes the bytes first, so that a bad byte is reported with its line.

    Args:
        path: the table.
        required: the columns that must be present, or a function of the header's names
            returning them (a reader that accepts two spellings of a column).
        numeric: columns parsed as numbers: blank is NaN; a column holding a value that is not
            a number is left as text (blank ``""``), for the reader to name the value.
        text: columns read as text exactly as written (blank ``""``); default: every column not
            in ``numeric``. Other columns are as pandas infers them (reading every column as
            text doubles pandas' parse of a large table).
        split_header: the header line -> column names (default: the csv module's split);
            NIH ChestX-ray14's header holds commas inside brackets.
        trailing_empty: a header or a row may end in extra empty fields (NIH's 2017 file
            ends every line with a comma).
        skipinitialspace: drop spaces after each separator (``a, b``).

    Returns:
        The rows, their lines and the source name.

    Raises:
        FileNotFoundError: no such file.
        TableError: not a readable gzip file, not UTF-8 (naming the line), a column named twice,
            a missing required column, a row with more or fewer fields than the header
            (naming the line and the first missing or extra column), or no rows.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "t.csv").write_text('id,note\\na,"two\\nlines"\\n\\nb,x\\n')
        >>> read_table(folder / "t.csv").lines.tolist()
        [2, 5]
    """
    path = Path(path)
    source = str(path)
    if path.name.lower().endswith(".parquet"):
        return _read_parquet(path, required)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"table not found: {path}") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise TableError(f"{source}: not a readable gzip file ({err})") from None
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TableError(
            f"{source}: line {line} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save the table as UTF-8"
        ) from None
    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    end = decoded.find("\n")
    header = decoded[: len(decoded) if end < 0 else end].rstrip("\r")
    fields = (
        split_header(header)
        if split_header is not None
        else next(csv.reader([header], delimiter=sep, skipinitialspace=skipinitialspace), [])
    )
    names = list(fields)
    while trailing_empty and names and not names[-1]:
        names.pop()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TableError(f"{source}: line 1 names column(s) {repeated} more than once")
    check_columns(names, required(names) if callable(required) else required, source)
    numeric = [n for n in names if n in numeric]
    text = (
        [n for n in names if n not in numeric] if text is None else [n for n in text if n in names]
    )

    def parse(width: int) -> pd.DataFrame | None:
        """pandas on the rows, the header's names and ``width - len(names)`` extra fields."""
        extra = [f"\0extra{k}" for k in range(width - len(names))]
        frame = _parse(data, [*names, *extra], numeric, text, sep, skipinitialspace)
        if frame is None or any((frame[e] != "").any() for e in extra):
            return None
        return frame.drop(columns=extra)

    # one row per line: no quote character, as many rows as non-blank lines and as many
    # separators as full rows hold (pandas refuses a row with too many, bar the first)
    frame = None
    if '"' not in decoded:
        body = decoded[end + 1 :].rstrip("\r\n") if end >= 0 else ""
        first = body.split("\n", 1)[0]
        frame = parse(len(fields))
        if frame is not None and (
            (body.count("\n") + 1 if body else 0) != len(frame)
            or body.count(sep) != (len(fields) - 1) * len(frame)
            or (body and first.count(sep) != len(fields) - 1)
        ):
            frame = None
        if frame is not None:
            return _with_rows(Table(frame, np.arange(2, len(frame) + 2), source))
    # exact: the csv module's line count; it checks every row's fields, pandas parses them
    lines, width = _row_lines(decoded, names, source, sep, skipinitialspace, trailing_empty)
    frame = parse(max(width, len(fields)))
    if frame is None or len(frame) != len(lines):
        raise TableError(f"{source}: not a readable CSV table")
    return _with_rows(Table(frame, lines, source))


def _with_rows(table: Table) -> Table:
    """``table``, unless it has no rows (a :class:`TableError` naming the file)."""
    if table.frame.empty:
        names = [str(c) for c in table.frame.columns if str(c)]
        what = f"only its header, {len(names)} column(s)" if names else "the file is empty"
        raise TableError(f"{table.source}: the table has no rows ({what})")
    return table


def _read_parquet(
    path: Path, required: Iterable[str] | Callable[[list[str]], Iterable[str]]
) -> Table:
    """A Parquet table with every column as text (missing values ``""``); its rows numbered
    from 1 in place of lines."""
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise ImportError(
            f"{path}: reading Parquet needs pyarrow: pip install 'medxfer[parquet]' ({err})"
        ) from None
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    names = [str(c) for c in frame.columns]
    check_columns(names, required(names) if callable(required) else required, str(path))
    return _with_rows(Table(frame, np.arange(1, len(frame) + 1), str(path)))


def _parse(
    data: bytes,
    names: list[str],
    numeric: Sequence[str],
    text: Sequence[str],
    sep: str,
    skipinitialspace: bool,
) -> pd.DataFrame | None:
    """pandas' C parser on the rows after the header line; ``None`` when a row after the first
    has more fields than ``names``. Columns are left to pandas' inference (reading them as text
    doubles the parse), and ``text`` columns it read as anything but text -- numbers, or a mix
    of numbers and text in parts of a large file -- parsed again as text."""

    def read(**kw: object) -> pd.DataFrame:
        with warnings.catch_warnings():  # a mixed or cut column: read again as text, or refused
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            return pd.read_csv(
                io.BytesIO(data),
                sep=sep,
                header=None,
                skiprows=1,
                names=names,
                index_col=False,
                keep_default_na=False,
                skipinitialspace=skipinitialspace,
                encoding="utf-8",
                **kw,
            )

    try:
        frame = read(na_values={n: [""] for n in numeric})
    except pd.errors.ParserError:
        return None
    except pd.errors.EmptyDataError:
        return pd.DataFrame({n: pd.Series(dtype=float if n in numeric else str) for n in names})
    again = [n for n in text if not isinstance(frame[n].dtype, pd.StringDtype)]
    if again:
        frame[again] = read(usecols=again, dtype=str)[again]
    return frame


def _row_lines(
    text: str,
    names: list[str],
    source: str,
    sep: str,
    skipinitialspace: bool,
    trailing_empty: bool,
) -> tuple[np.ndarray, int]:
    """The line each row after the header starts on, by the csv module, and the most fields a
    row has; a row with more or fewer fields than ``names`` is an error (more are allowed when
    they are empty and ``trailing_empty``). Blank lines, and lines of spaces, are skipped as
    pandas skips them."""
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=skipinitialspace
    )
    next(reader, None)
    lines, most = [], len(names)
    start = reader.line_num + 1
    width = len(names)
    for row in reader:
        if len(row) > 1 or (row and row[0].strip()):
            if len(row) != width and not (
                trailing_empty and len(row) > width and not any(row[width:])
            ):
                missing = (
                    f"column {names[len(row)]!r} is missing"
                    if len(row) < width
                    else f"there are fields after the last column {names[-1]!r}"
                )
                raise TableError(
                    f"{source}: line {start} has {len(row)} fields, the header {width}: {missing}"
                )
            lines.append(start)
            most = max(most, len(row))
        start = reader.line_num + 1
    return np.asarray(lines, dtype=np.int64), most


# --- checks every reader shares --------------------------------------------------------------


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
    codes, found = pd.factorize(text)
    uniques = [str(v) for v in found.tolist()]
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

    Without ``drop`` a repeated key is an error naming the file, its lines and the key, and
    the columns in which the copies differ, with both values (the first three columns), or,
    when they are identical, how to drop them. With ``drop`` the later copies are dropped (counted and
    logged) when they equal the first in the ``compare`` columns; copies that differ stay an
    error, since neither can be chosen silently.

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
    group = np.flatnonzero(match)
    differ = _differing(table.iloc[group], [c for c in cols if c not in key])
    if differ:
        shown = "; ".join(
            f"{c!r}: {_short(table[c].iloc[group[0]])} on line {lines[group[0]]}, "
            f"{_short(table[c].iloc[r])} on line {lines[r]}"
            for c, r in ((c, group[k]) for c, k in differ[:3])
        )
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise TableError(
            f"{source}: lines {at} hold the same {what} ({value}); the copies differ in "
            f"column(s) {shown}{more}, so neither can be dropped: fix the table"
        )
    raise TableError(
        f"{source}: lines {at} hold the same {what} ({value}); remove the copies, or set "
        "drop_duplicates: true to drop identical ones (counted)"
    )


def _differing(rows: pd.DataFrame, columns: Sequence[str]) -> list[tuple[str, int]]:
    """The ``columns`` in which some of ``rows`` (copies of one key) differ from the first,
    each with the position in ``rows`` of the first that differs; two blanks agree, as in
    pandas' ``duplicated``."""
    out = []
    for c in columns:
        values = rows[c]
        same = (values == values.iloc[0]) | (values.isna() & bool(pd.isna(values.iloc[0])))
        if not same.all():
            out.append((c, int(np.flatnonzero(~same.to_numpy())[0])))
    return out


def _short(value: object, width: int = 40) -> str:
    """``repr(value)``, cut to ``width`` characters for a one-line message."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= width else text[: width - 3] + "..."


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
