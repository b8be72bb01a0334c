"""Readers for the chest X-ray metadata tables: CheXpert and NIH ChestX-ray14.

Plain functions, no image IO (DESIGN.md), each returning one validated table with the columns
``path, id, patient_id, sex, age, view`` plus one float column per label (1 positive,
0 negative, NaN unknown: masked in the loss and the metrics), ``source`` and ``line``.

* CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` with
  ``Path,Sex,Age,Frontal/Lateral,AP/PA`` and 14 observation columns holding 1.0 / 0.0 / -1.0
  (uncertain) / blank (not mentioned). Uncertainty policies of the CheXpert paper: ``ones``
  (U-Ones, used by Mustafa et al. 2021), ``zeros`` (U-Zeros), ``ignore`` (masked). Blank is
  negative.
* NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017.csv`` or
  ``Data_Entry_2017_v2020.csv``, findings separated by ``|``, whose header has commas inside
  ``OriginalImage[Width,Height]``; optional ``train_val_list.txt`` / ``test_list.txt``. Labels
  may be NIH findings or CheXpert observations (mapped; those NIH lacks are NaN, not negative).

Both readers open a table the same way (plain or gzip-compressed, UTF-8) and require every row
to have the header's number of fields; errors name the file, line and column. They work on
whole columns (:mod:`medxfer.data.text`: pyarrow's kernels and numpy on the bytes), not on one
Python object per row: each reads its table in 1.7-1.9 times the CPU time of
``pandas.read_csv`` (2.2-2.6 times its wall time: pandas parses on two cores, the checks run
on one; ``benchmarks/table_readers.py``, figures in docs/performance.md).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import mmap
import os
import re
import stat
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from medxfer.data.tables import (
    TableError,
    check_age,
    check_columns,
    check_duplicates,
    normalise_sex,
)
from medxfer.data.text import (
    arrow_backed,
    factorize_text,
    is_unique,
    prefix_text,
    remove_suffix,
    repeat_text,
    slice_text,
    strip_text,
    take_text,
)

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "read_chexpert_csv",
    "read_nih_csv",
    "read_split_list",
]

log = logging.getLogger(__name__)

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
#: The five CheXpert competition labels, the default label set.
COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
)  # fmt: skip
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia", "No Finding",
)  # fmt: skip
#: NIH finding -> CheXpert observation. CheXpert observations no NIH finding maps to
#: (Enlarged Cardiomediastinum, Lung Opacity, Pleural Other, Fracture, Support Devices) are
#: unknown (NaN) on NIH images.
NIH_TO_CHEXPERT: dict[str, str] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Effusion": "Pleural Effusion", "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax", "Mass": "Lung Lesion", "Nodule": "Lung Lesion",
    "No Finding": "No Finding",
}  # fmt: skip

Uncertainty = Literal["ones", "zeros", "ignore"]
_CHEXPERT_META = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
#: Allowed values of CheXpert's text columns -> what the table holds (``Sex``: the shared
#: :data:`~medxfer.data.tables.SEX_VALUES`).
_CHEXPERT_FRONTAL_LATERAL = {"Frontal": "Frontal", "Lateral": "Lateral"}
#: ``AP/PA`` of a frontal row -> its view group (lateral rows are ``Lateral``). ``LL`` / ``RL``
#: (left / right lateral decubitus, a few frontal rows of the real train.csv) form one group.
_CHEXPERT_VIEW = {"AP": "AP", "PA": "PA", "LL": "Decubitus", "RL": "Decubitus", "": "Unknown"}
#: ``patientN/studyN/<view>`` anywhere in a CheXpert ``Path``: its first match names the image.
_CHEXPERT_PATH = re.compile(r"(patient\d+)/(study\d+)/([^/.]+)")
#: What follows ``patientN`` in that match.
_CHEXPERT_REST = re.compile(r"/(study\d+)/([^/.]+)")
_NIH_META = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)
#: Spellings of the NIH sex column, the first one present is read.
_NIH_SEX_COLUMNS = ("Patient Gender", "Patient Sex")
#: ``View Position`` values of ChestX-ray14 (every image is frontal).
_NIH_VIEW = {"PA": "PA", "AP": "AP"}
_GZIP_MAGIC = b"\x1f\x8b"


def _check_labels(labels: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    labels = list(labels)
    unknown = [lab for lab in labels if lab not in known]
    if unknown or not labels:
        raise ValueError(
            f"unknown {what} label(s) {unknown or '(none given)'}; choose from {list(known)}"
        )
    return labels


# --- one way of opening a table ------------------------------------------------------------


class _Text(NamedTuple):
    """A table's bytes as :func:`_read_bytes` opened them."""

    data: bytes | mmap.mmap  # a regular file is mapped, not copied
    ascii: bool  # every byte < 128: characters are bytes

    def close(self) -> None:
        """Unmap the file (its descriptor too), unless a view of it is still alive (a
        traceback holding a frame): then it is unmapped when that goes."""
        if isinstance(self.data, mmap.mmap):
            try:
                self.data.close()
            except BufferError:
                pass


def _read_bytes(path: Path) -> _Text:
    """The text of a plain or gzip-compressed table (recognised by its content, whatever its
    name), checked to be UTF-8: the one way both readers open a table.

    A regular file is memory-mapped rather than read (a pipe is read): the checks that follow
    scan it without a copy (reading CheXpert's 23 MB train.csv into a new buffer costs ~10 ms
    of page faults, as much as the rest of the checks), and pandas parses it from its path,
    mapping it too. As with pandas, a file truncated by another process while it is mapped
    stops this one (SIGBUS): write tables to a new file and rename it over the old one.
    :meth:`_Text.close` unmaps it."""
    try:
        with path.open("rb") as file:
            status = os.fstat(file.fileno())
            data: bytes | mmap.mmap = (
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                if stat.S_ISREG(status.st_mode) and status.st_size  # an empty one cannot be
                else file.read()
            )
    except FileNotFoundError:
        raise FileNotFoundError(f"table not found: {path}") from None
    compressed = data[:2] == _GZIP_MAGIC
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise TableError(f"{path}: not a readable gzip file ({err})") from None
    ascii = not len(data) or int(np.frombuffer(data, np.uint8).max()) < 128
    if not ascii:  # real tables are ASCII: for them this is the one scan above
        text = bytes(data)
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as err:
            line = text.count(b"\n", 0, err.start) + 1
            raise TableError(
                f"{path}: line {line} is not UTF-8 text ({err.reason} at byte {err.start}); "
                "save the table as UTF-8"
            ) from None
    return _Text(data, ascii)


def _split_csv_header(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _split_nih_header(line: str) -> list[str]:
    """Header names of a Data_Entry CSV, whose names hold commas inside brackets.

    ``OriginalImage[Width,Height]`` is one header name but two fields in every row; it becomes
    the columns ``OriginalImage[Width]`` and ``OriginalImage[Height]``.
    """
    names: list[str] = []
    for name in re.split(r",(?![^\[]*\])", line.strip()):
        m = re.fullmatch(r"(.*)\[(.*)\]", name)
        names += (
            [f"{m.group(1)}[{p.strip()}]" for p in m.group(2).split(",")]
            if m and "," in m.group(2)
            else [name]
        )
    return names


def _read_rows(
    path: Path,
    split_header: Callable[[str], list[str]],
    required: Callable[[list[str]], Sequence[str]],
    numeric: Sequence[str],
    *,
    trailing_empty: bool = False,
) -> tuple[pd.DataFrame, np.ndarray, bool]:
    """The rows of a table whose every row has the header's number of fields.

    Args:
        path: a plain or gzip CSV.
        split_header: the header line -> column names.
        required: column names -> the columns that must be present; those not ``numeric`` are
            text (blank ``""``).
        numeric: columns parsed as numbers (blank -> NaN; the column stays text when a value
            is not a number, for the caller to name it).
        trailing_empty: a header or a row may end in extra empty fields (NIH's 2017 file ends
            every line with a comma).

    Returns:
        The rows, the file line of each row (header = line 1; blank lines are skipped) and
        whether the file is ASCII (characters are bytes: the readers' shortcuts).

    Raises:
        TableError: a missing column, or a row with more or fewer fields than the header
            (naming the line and the first missing or extra column).
    """
    text = _read_bytes(path)
    try:
        frame, lines = _rows(path, text, split_header, required, numeric, trailing_empty)
    finally:
        text.close()  # the rows hold no view of it
    return frame, lines, text.ascii


def _rows(
    path: Path,
    text: _Text,
    split_header: Callable[[str], list[str]],
    required: Callable[[list[str]], Sequence[str]],
    numeric: Sequence[str],
    trailing_empty: bool,
) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`_read_rows` on the opened file ``text``."""
    data = text.data
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    fields = split_header(data[:end].decode("utf-8-sig").rstrip("\r"))
    names = fields
    while trailing_empty and names and not names[-1]:
        names = names[:-1]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TableError(f"{path}: line 1 names column(s) {repeated} more than once")
    needed = list(required(names))
    check_columns(names, needed, str(path))
    strings = [n for n in needed if n not in numeric]
    # a header ending in empty names (NIH 2017): those fields are read too, to check they are empty
    extra = [f"\0extra{i}" for i in range(len(fields) - len(names))]
    first = data.find(b"\n", end + 1)
    first_row = data[end + 1 : len(data) if first < 0 else first]
    # fast: no quoted field, so each line is a row with one comma less than its fields; pandas
    # raises on a row after the first with too many, the first is checked here, and the total
    # comma count then pins every row's
    if data.find(b'"') < 0 and first_row.count(b",") == len(fields) - 1:
        # from its path, pandas reads a regular file on every core, from memory on one
        source = path if isinstance(data, mmap.mmap) else io.BytesIO(data)
        frame = _parse(source, [*names, *extra], numeric, [*strings, *extra], skip=1)
        if frame is not None and _one_row_per_line(data, end + 1, len(fields), len(frame)):
            if all((frame[e] == "").all() for e in extra):
                frame = frame.drop(columns=extra) if extra else frame
                return frame, np.arange(len(frame)) + 2
    # slow and exact: quoted fields, blank lines, rows of the wrong length (an error)
    rows, lines = _csv_rows(path, data, names, trailing_empty)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    buffer.seek(0)
    frame = _parse(buffer, names, numeric, strings)
    if frame is None or len(frame) != len(rows):
        raise TableError(f"{path}: not a readable CSV table")
    return frame, np.asarray(lines, dtype=np.int64)


def _parse(
    source: Path | io.IOBase,
    names: list[str],
    numeric: Sequence[str],
    text: Sequence[str],
    skip: int = 0,
) -> pd.DataFrame | None:
    """pandas' C parser on the rows after the ``skip`` header lines; ``None`` when it finds a
    row after the first with more fields than ``names`` (every column is read: with
    ``usecols`` it would not look). ``text`` columns are left to pandas' inference (much faster
    than ``dtype=str``) and turned into text where it read numbers, or where its chunks of
    the file disagreed (numbers in one, text in another) or there is no row."""
    try:
        with warnings.catch_warnings():  # a column of mixed types is made text below
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(
                source,
                header=None,
                skiprows=skip,
                names=names,
                compression=None,  # already decided by content
                index_col=False,
                keep_default_na=False,
                na_values={n: [""] for n in names if n in numeric},
            )
    except pd.errors.ParserError:
        return None
    except pd.errors.EmptyDataError:
        return pd.DataFrame({n: pd.Series(dtype=float if n in numeric else str) for n in names})
    for n in text:
        column = frame[n]
        if column.dtype.kind in "biuf" or (
            column.dtype == object and pd.api.types.infer_dtype(column) != "string"
        ):
            frame[n] = column.astype(str)
    return frame


def _one_row_per_line(data: bytes | mmap.mmap, start: int, fields: int, rows: int) -> bool:
    """Whether the text after ``start`` is ``rows`` lines holding ``(fields - 1) * rows``
    commas (counted in slices of the text: no large temporaries)."""
    stop = len(data)
    while stop > start and data[stop - 1] in b"\r\n":
        stop -= 1
    body = np.frombuffer(data, np.uint8, stop - start, start)
    commas = newlines = 0
    step = 1 << 20
    scratch = np.empty(min(step, body.size), dtype=bool)
    for i in range(0, body.size, step):
        part = body[i : i + step]
        commas += np.count_nonzero(np.equal(part, 44, out=scratch[: part.size]))
        newlines += np.count_nonzero(np.equal(part, 10, out=scratch[: part.size]))
    return (newlines + 1 if body.size else 0) == rows and commas == (fields - 1) * rows


def _csv_rows(
    path: Path, data: bytes | mmap.mmap, names: list[str], trailing_empty: bool
) -> tuple[list[list[str]], list[int]]:
    """Every row (``len(names)`` fields) and its first line, by the csv module; blank lines are
    skipped (as pandas does)."""
    reader = csv.reader(io.StringIO(bytes(data).decode("utf-8-sig"), newline=""))
    next(reader, None)
    rows, lines = [], []
    start = reader.line_num + 1
    width = len(names)
    for row in reader:
        if len(row) > 1 or (row and row[0].strip()):
            if len(row) != width:
                if not (trailing_empty and len(row) > width and not any(row[width:])):
                    missing = (
                        f"column {names[len(row)]!r} is missing"
                        if len(row) < width
                        else (f"there are fields after the last column {names[-1]!r}")
                    )
                    raise TableError(
                        f"{path}: line {start} has {len(row)} fields, the header {width}: {missing}"
                    )
                row = row[:width]
            rows.append(row)
            lines.append(start)
        start = reader.line_num + 1
    return rows, lines


def _raw_field(path: Path, line: int, index: int) -> str:
    """The text of field ``index`` of the row starting on ``line`` of a table, as written (for
    error messages: the file is read again)."""
    text = _read_bytes(path)
    try:
        stream = io.StringIO(bytes(text.data).decode("utf-8-sig"), newline="")
    finally:
        text.close()
    for _ in range(line - 1):
        stream.readline()
    row = next(csv.reader(stream), [])
    return row[index] if index < len(row) else ""


# --- columns -------------------------------------------------------------------------------


def _join(root: Path, names: pd.Series) -> pd.Series:
    """``str(root / name)`` of every name, without a ``Path`` per row: the name is appended as
    written (an absolute name replaces ``root``, as with pathlib)."""
    prefix = os.path.join(str(root), "")
    joined = prefix_text(
        prefix, names if os.sep == "/" else names.str.replace("/", os.sep, regex=False)
    )
    absolute = names.str.startswith("/") if os.sep == "/" else names.str.match(r"[/\\]|\w:")
    if absolute.any():
        joined[absolute] = [str(root / name) for name in names[absolute]]
    return joined


def _patient_codes(patient: pd.Series, width: int, ascii: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which values of a column cut from CheXpert paths at one position are ``patient`` and
    digits, ``width`` characters in all, and an integer per row that is equal for two such
    rows exactly when their values are.

    For an ASCII table stored by pyarrow the integer is the patient number, read from the
    digits by pyarrow's kernels: about 3 ms for the 223k rows of the real train.csv, where
    hashing the values and matching each distinct one with a regex (the general way, kept for
    other tables) takes about 12 ms.
    """
    if ascii and arrow_backed(patient) and len(patient) and 8 <= width <= 25:
        import pyarrow as pa  # there: the column is stored by it
        import pyarrow.compute as pc

        raw = pa.array(patient.array).cast(pa.large_binary())
        digits = pc.binary_slice(raw, 7, width).cast(pa.large_string())
        ok = pc.and_(
            pc.and_(pc.equal(pc.binary_length(raw), width), pc.ascii_is_decimal(digits)),
            pc.equal(pc.binary_slice(raw, 0, 7), pa.scalar(b"patient", pa.large_binary())),
        ).to_numpy(zero_copy_only=False)
        if ok.all():
            return ok, pc.cast(digits, pa.int64()).to_numpy()
        return ok, factorize_text(patient)[0]
    codes, uniques = factorize_text(patient)
    valid = [len(u) == width and re.fullmatch(r"patient\d+", u) is not None for u in uniques]
    return np.array(valid, dtype=bool)[codes], codes


def _chexpert_ids(
    paths: pd.Series, path: Path, lines: np.ndarray, ascii: bool = False
) -> tuple[pd.Series, pd.Series, np.ndarray | None]:
    """The image id ``patientN_studyN_<view>`` and the patient id of every CheXpert ``Path``,
    from the first match of ``patient\\d+/study\\d+/[^/.]+`` in it, and an integer per
    row that is equal for two rows exactly when their ids are (hashing integers is several
    times cheaper than hashing the ids to find a repeated image), or None.

    Vectorised per layout: the first path not done yet gives one (the text before its match,
    the length of its patient part); every path with that prefix and a patient part of that
    length is cut with a few string operations on the whole column, the rest of it
    (``/studyN/<view>.jpg``) matched once per distinct value. A real table has one or two
    layouts; paths in rarer ones (under 1 % of those left) are matched one by one.
    """
    if paths.empty:
        return paths.copy(), paths.copy(), np.zeros(0, dtype=np.int64)
    ids = patients = None
    todo = np.arange(len(paths))
    while len(todo):
        group = paths if len(todo) == len(paths) else paths.iloc[todo]
        m = _CHEXPERT_PATH.search(group.iloc[0])
        if m is None:
            raise TableError(
                f"{path}: line {lines[todo[0]]}, column Path: {group.iloc[0]!r} is not of the "
                "form <...>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
            )
        k, f = m.start(), m.end(1)
        patient = slice_text(group, k, f, ascii=ascii)
        codes, rests = factorize_text(slice_text(group, f, ascii=ascii))
        p_ok, p_codes = _patient_codes(patient, f - k, ascii)
        matches = [_CHEXPERT_REST.match(rest) for rest in rests]
        done = (
            group.str.startswith(group.iloc[0][:k]).to_numpy(dtype=bool)
            & np.array([m is not None for m in matches])[codes]
            & p_ok
        )
        rest_ids = ["_" + "_".join(m.groups()) if m else "" for m in matches]
        image_ids = patient + pd.array(rest_ids, dtype=paths.dtype).take(codes)
        if len(group) == len(paths) and done.all():  # every path in one layout: the usual case
            # distinct rests may share an id (view1.jpg, view1.png): number the ids of the rests
            r_codes, r_ids = pd.factorize(pd.Series(rest_ids, dtype=object))
            if int(p_codes.max()) >= np.iinfo(np.int64).max // len(r_ids):  # 17+ digits
                p_codes = factorize_text(patient)[0]
            key = p_codes.astype(np.int64) * len(r_ids) + r_codes[codes]
            return image_ids, patient, key
        if ids is None:
            ids = pd.Series("", index=paths.index, dtype=paths.dtype)
            patients = ids.copy()
        ids.iloc[todo[done]] = image_ids[done].to_numpy()
        patients.iloc[todo[done]] = patient[done].to_numpy()
        todo = todo[~done]
        if 0 < len(todo) and done.sum() < max(1, len(group) // 100):  # rare: one by one
            break
    assert ids is not None and patients is not None
    for i in todo:  # rare layouts: the reference definition, one path at a time
        m = _CHEXPERT_PATH.search(paths.iloc[i])
        if m is None:
            raise TableError(
                f"{path}: line {lines[i]}, column Path: {paths.iloc[i]!r} is not of the form "
                "<...>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
            )
        ids.iloc[i], patients.iloc[i] = "_".join(m.groups()), m.group(1)
    return ids, patients, None


def _codes(
    text: pd.Series,
    table: Mapping[str, str],
    path: Path,
    lines: np.ndarray,
    default: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The code of each row's value and what each code stands for: the (stripped) value through
    ``table``; a value not in it becomes ``default`` or, without one, is an error naming the
    line and column. Works on the distinct values."""
    codes, uniques = factorize_text(text)
    new = []
    for code, value in enumerate(uniques):
        new.append(table.get(value.strip(), default))
        if new[-1] is None:
            i = int(np.flatnonzero(codes == code)[0])
            allowed = ", ".join(repr(v) for v in table if v)
            raise TableError(
                f"{path}: line {lines[i]}, column {text.name!r}: value {value!r} is not one of "
                f"{allowed}" + (" or blank" if "" in table else "")
            )
    return codes, new


def _recode(
    text: pd.Series,
    table: Mapping[str, str],
    path: Path,
    lines: np.ndarray,
    default: str | None = None,
) -> pd.Series:
    """``text`` through ``table`` (see :func:`_codes`)."""
    codes, values = _codes(text, table, path, lines, default)
    return take_text(values, codes, text)


def _numeric(col: pd.Series, path: Path, lines: np.ndarray, name: str) -> pd.Series:
    """Ages such as ``57`` or NIH 2017's ``057Y``; a value that is neither is an error."""
    if col.dtype.kind in "iuf":
        return col.astype(float)
    text = col.fillna("").astype(str).str.strip()
    text = text.str.replace(r"^(\d+)[YyMmDd]$", r"\1", regex=True)
    values = pd.to_numeric(text.replace("", np.nan), errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(
            f"{path}: line {lines[i]}, column {name!r}: {col.iloc[i]!r} is not a number"
        )
    return values.astype(float)


def _chexpert_values(
    raw: pd.DataFrame,
    labels: Sequence[str],
    path: Path,
    lines: np.ndarray,
) -> dict[str, np.ndarray]:
    """CheXpert label columns as floats: 1, 0, -1, NaN for blank. Any other value (a number,
    or text that is not one) is an error naming the line and column.

    A value ``v`` is allowed when ``|v| (|v| - 1) == 0`` (exactly -1, 0 or 1): one test per
    column, where comparing with each allowed value would take three; ``|t| > 0`` is False
    for NaN (blank). The test runs in two scratch rows reused for every column."""
    values = {}
    t, bad = np.empty(len(raw)), np.empty(len(raw), dtype=bool)
    for lab in labels:
        col = raw[lab]
        if col.dtype.kind in "iuf":
            v = col.to_numpy(dtype=float)
            blank = None
        else:  # some value is not a number: pandas left the column as text
            text = col.fillna("").astype(str).str.strip()
            v = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
            blank = (text == "").to_numpy()
        np.abs(v, out=t)
        np.multiply(t, t - 1.0, out=t)
        np.greater(np.abs(t, out=t), 0.0, out=bad)
        if blank is not None:  # NaN: blank, or text that is not a number
            bad |= np.isnan(v) & ~blank
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = _raw_field(path, int(lines[i]), list(raw.columns).index(lab)).strip()
            raise TableError(
                f"{path}: line {lines[i]}, column {lab!r}: value {value!r} is not one of "
                "1.0, 0.0, -1.0 or blank"
            )
        values[lab] = v
    return values


def _label_block(
    values: Mapping[str, np.ndarray], labels: Sequence[str], uncertainty: Uncertainty
) -> np.ndarray:
    """The chosen CheXpert labels under an uncertainty policy, as one ``(len(labels), rows)``
    array (the layout of a pandas float block, so the table takes it without a copy): blank
    -> 0 (not mentioned), -1 -> 1 (``ones``), 0 (``zeros``) or NaN (``ignore``).
    ``np.fmax(x, 0)`` is 0 for NaN (blank)."""
    rows = len(next(iter(values.values()))) if values else 0
    block = np.empty((len(labels), rows))
    for row, lab in zip(block, labels, strict=True):
        v = values[lab]
        if uncertainty == "ones":
            np.fmax(np.abs(v, out=row), 0.0, out=row)
        else:
            np.fmax(v, 0.0, out=row)
            if uncertainty == "ignore":
                row[v == -1.0] = np.nan
    return block


# --- readers -------------------------------------------------------------------------------


def read_chexpert_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    uncertainty: Uncertainty = "ones",
    frontal_only: bool = False,
    root: str | os.PathLike[str] | None = None,
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
) -> pd.DataFrame:
    """Read a CheXpert ``train.csv`` / ``valid.csv`` (plain or gzip-compressed).

    The whole row is checked, not only the requested labels: every row has the header's
    number of fields; every observation column present (of :data:`CHEXPERT_LABELS`) holds
    1.0, 0.0, -1.0 (or 1, 0, -1) or blank; ``Sex`` is one of
    :data:`~medxfer.data.tables.SEX_VALUES` (Female, Male, F, M in any case, Unknown or
    blank); ``Frontal/Lateral`` is Frontal or Lateral; ``AP/PA`` is AP, PA, LL, RL or blank;
    ``Age`` is a number in [0, 120]; ``Path`` holds ``patientN/studyN/<view>`` and no image
    is listed twice. Columns the reader does not know are not checked.

    Groups: ``sex`` Unknown when blank; ``age`` NaN (the unknown age group) when blank or 0,
    the real file's "unknown"; ``view`` Lateral for lateral rows, else ``AP/PA`` with ``LL`` and
    ``RL`` (left / right lateral decubitus: frontal images, a few in the real train.csv) as one
    group ``Decubitus`` and blank as ``Unknown``.

    Args:
        path: the CSV.
        labels: observations to keep (default: the 5 competition labels).
        uncertainty: what -1.0 becomes: ``ones`` -> 1, ``zeros`` -> 0, ``ignore`` -> NaN.
        frontal_only: keep frontal images only.
        root: the folder that holds ``CheXpert-v1.0.../`` (``Path`` is relative to it);
            default: the CSV's grandparent.
        drop_duplicates: drop later rows of an image listed twice when they repeat the first
            (counted and logged) instead of failing.
        unknown_sex: read a ``Sex`` value outside the list as Unknown (counted and logged)
            instead of failing.

    Returns:
        The validated table (see the module docstring); ``attrs["labels"]`` holds ``labels``.

    Raises:
        TableError: a missing column, a row with too few or too many fields, a value outside
            the above, or an image listed twice (naming the file, line and column).
    """
    path = Path(path)
    labels = _check_labels(labels, CHEXPERT_LABELS, "CheXpert")
    if uncertainty not in ("ones", "zeros", "ignore"):
        raise ValueError(f"uncertainty must be 'ones', 'zeros' or 'ignore', got {uncertainty!r}")
    raw, lines, ascii = _read_rows(
        path,
        _split_csv_header,
        required=lambda names: [*_CHEXPERT_META, *labels],
        numeric=("Age", *CHEXPERT_LABELS),
    )
    present = [lab for lab in CHEXPERT_LABELS if lab in raw.columns]
    values = _chexpert_values(raw, present, path, lines)  # every label, requested or not
    root = Path(root) if root is not None else path.resolve().parent.parent
    ids, patients, key = _chexpert_ids(raw["Path"], path, lines, ascii)
    age = _numeric(raw["Age"], path, lines, "Age")
    check_age(age, lambda i: f"{path}: line {lines[i]}, column 'Age'")
    codes, kinds = _codes(raw["Frontal/Lateral"], _CHEXPERT_FRONTAL_LATERAL, path, lines)
    lateral = (np.array(kinds) == "Lateral")[codes]
    codes, views = _codes(raw["AP/PA"], _CHEXPERT_VIEW, path, lines)
    sex = normalise_sex(raw["Sex"], lambda i: f"{path}: line {lines[i]}, column 'Sex'", unknown_sex)
    out = pd.concat(
        [
            pd.DataFrame(
                {
                    "path": _join(root, raw["Path"]),
                    "id": ids,
                    "patient_id": patients,
                    "sex": sex,
                    "age": age.where(age != 0),  # 0: unknown in the real file
                    "view": take_text(
                        [*views, "Lateral"], np.where(lateral, len(views), codes), raw["AP/PA"]
                    ),
                },
                index=raw.index,
            ),
            pd.DataFrame(
                _label_block(values, labels, uncertainty).T,
                index=raw.index,
                columns=labels,
                copy=False,
            ),
            pd.DataFrame({"source": repeat_text(str(path), raw["Path"]), "line": lines}),
        ],
        axis=1,
    )
    # one column first (an integer per id when there is one): the whole row only on a repeat
    repeated = not ids.is_unique if key is None else pd.Series(key).duplicated().any()
    if repeated:
        keep = check_duplicates(
            raw.assign(id=ids), ["id"], lines, str(path), "image", drop_duplicates
        )
        out, lateral = out[keep], lateral[keep]
    if frontal_only:
        out = out[~lateral]
        if out.empty:
            raise TableError(
                f"{path}: no rows left after frontal_only=True (every image is lateral)"
            )
    out.attrs.update(labels=labels, source=str(path))
    return out


def read_split_list(path: str | os.PathLike[str]) -> set[str]:
    """Image names of an NIH split list (``train_val_list.txt`` / ``test_list.txt``)."""
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def read_nih_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    image_dir: str | os.PathLike[str] | None = None,
    split_list: str | os.PathLike[str] | None = None,
    frontal_only: bool = False,
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
) -> pd.DataFrame:
    """Read NIH ChestX-ray14's ``Data_Entry_2017*.csv`` (plain or gzip-compressed).

    Every row has the header's number of fields (the 2017 file's trailing empty field
    allowed). The columns the reader uses are checked on every row: ``Image Index`` is not
    blank and no image is listed twice; every name in ``Finding Labels`` is an NIH finding;
    ``Patient ID`` is not blank; ``Patient Age`` is a number (``57`` or ``057Y``) in [0, 120];
    the sex column, spelled ``Patient Gender`` or ``Patient Sex``, is one of
    :data:`~medxfer.data.tables.SEX_VALUES` (M / F in the real file); ``View Position`` is PA
    or AP. ``Follow-up #`` and the original size and pixel spacing columns are not used and
    not checked.

    Args:
        path: the CSV.
        labels: NIH findings (``Effusion``, ``Infiltration``...) and/or CheXpert observations
            (mapped through :data:`NIH_TO_CHEXPERT`; unknown, i.e. NaN, where NIH has no
            counterpart).
        image_dir: the folder holding the PNGs (default: ``images/`` beside the CSV).
        split_list: keep only the images named in this list file.
        frontal_only: accepted for symmetry with CheXpert; NIH images are all frontal.
        drop_duplicates: drop later rows of an image listed twice when they repeat the first
            (counted and logged) instead of failing.
        unknown_sex: read a sex value outside the list as Unknown (counted and logged) instead
            of failing.

    Raises:
        TableError: a missing column, a row with too few or too many fields, a value outside
            the above, or an image listed twice (naming the file, line and column).
    """
    del frontal_only  # every ChestX-ray14 image is frontal (PA or AP)
    path = Path(path)
    labels = _check_labels(
        labels, list(dict.fromkeys([*NIH_FINDINGS, *CHEXPERT_LABELS])), "NIH/CheXpert"
    )

    def sex_column(names: Sequence[str]) -> str:
        return next((c for c in _NIH_SEX_COLUMNS if c in names), _NIH_SEX_COLUMNS[0])

    def needed(names: list[str]) -> list[str]:
        return [sex_column(names) if c == "Patient Gender" else c for c in _NIH_META]

    raw, lines, _ = _read_rows(
        path,
        _split_nih_header,
        required=needed,
        numeric=("Patient Age", "Patient ID"),  # the real IDs are integers: text only if not
        trailing_empty=True,
    )
    image_dir = Path(image_dir) if image_dir is not None else path.parent / "images"

    def where(column: str) -> Callable[[int], str]:
        return lambda i: f"{path}: line {lines[i]}, column {column!r}"

    def check_not_blank(column: str, values: pd.Series) -> None:
        if (values == "").any():
            raise TableError(f"{where(column)(int(np.flatnonzero(values == '')[0]))}: blank")

    images = strip_text(raw["Image Index"])
    check_not_blank("Image Index", images)
    ids = raw["Patient ID"]
    if ids.dtype.kind in "iu":  # the real file: integers, so none is blank
        # each patient's text once (30k patients in the real file's 112k rows)
        codes, numbers = pd.factorize(ids.to_numpy())
        names = "nih" + pd.Series(numbers).astype(images.dtype)
        patients = pd.Series(names.array.take(codes), index=raw.index)
    else:
        patients = ids.astype(images.dtype).str.strip().where(ids.notna(), "")  # blank: NaN
        check_not_blank("Patient ID", patients)
        patients = "nih" + patients
    # the findings of each distinct Finding Labels value (a few hundred in the real file)
    codes, uniques = factorize_text(raw["Finding Labels"])
    column = {f: j for j, f in enumerate(NIH_FINDINGS)}
    pairs = np.array(
        [(u, column.get(f, -1)) for u, v in enumerate(uniques) for f in v.strip().split("|")],
        dtype=np.intp,
    ).reshape(-1, 2)
    if (pairs[:, 1] < 0).any():
        i = int(np.flatnonzero(np.isin(codes, pairs[pairs[:, 1] < 0, 0]))[0])
        unknown = [f for f in uniques[codes[i]].strip().split("|") if f not in column]
        raise TableError(
            f"{path}: line {lines[i]}, column 'Finding Labels': unknown finding(s) {unknown}; "
            f"expected names from {list(NIH_FINDINGS)}"
        )
    member = np.zeros((len(uniques), len(NIH_FINDINGS)), dtype=bool)  # distinct value x finding
    member[pairs[:, 0], pairs[:, 1]] = True
    distinct = list(dict.fromkeys(labels))  # a label asked for twice is one column
    block = np.empty((len(distinct), len(raw)))  # a pandas float block: taken as it is
    for row, lab in zip(block, distinct, strict=True):
        sources = [lab] if lab in column else [f for f, c in NIH_TO_CHEXPERT.items() if c == lab]
        if sources:
            np.take(
                member[:, [column[f] for f in sources]].any(axis=1).astype(float), codes, out=row
            )
        else:  # a CheXpert observation NIH has no finding for: unknown
            row.fill(np.nan)
    age = _numeric(raw["Patient Age"], path, lines, "Patient Age")
    check_age(age, where("Patient Age"))
    sex = raw[sex_column(raw.columns)]
    out = pd.concat(
        [
            pd.DataFrame(
                {
                    "path": _join(image_dir, images),
                    "id": remove_suffix(images, ".png"),
                    "patient_id": patients,
                    "sex": normalise_sex(sex, where(str(sex.name)), unknown_sex),
                    "age": age,
                    "view": _recode(raw["View Position"], _NIH_VIEW, path, lines),
                },
                index=raw.index,
            ),
            pd.DataFrame(block.T, index=raw.index, columns=distinct, copy=False),
            pd.DataFrame({"source": repeat_text(str(path), images), "line": lines}),
        ],
        axis=1,
    )
    if not is_unique(images):  # one column first: the whole row only when an image repeats
        keep = check_duplicates(
            raw.assign(id=images), ["id"], lines, str(path), "image", drop_duplicates
        )
        out, images = out[keep], images[keep]
    if split_list is not None:
        keep = read_split_list(split_list)
        out = out[images.isin(keep).to_numpy()]
        if out.empty:
            raise TableError(f"{path}: no rows left after filtering by split list {split_list}")
    out.attrs.update(labels=labels, source=str(path))
    return out
