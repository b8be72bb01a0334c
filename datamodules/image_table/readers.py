"""Readers of a user's image table (CSV / TSV / Parquet with configurable columns) and of an
image folder ``root/<class>/<image>``: plain functions returning the template's rows, errors
naming file, line and column."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medxfer.data.tables import TableError, check_columns, check_duplicates, read_table

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLIT_NAMES",
    "filter_rows",
    "read_image_folder",
    "read_image_table",
]

log = logging.getLogger(__name__)

#: Files an image-folder layout takes as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
#: Values of a split column and the split each names.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _where(path: Path, parquet: bool, line: int, column: str | None = None) -> str:
    where = f"row {line}" if parquet else f"line {line}"
    return f"{path}, {where}" + (f", column {column!r}" if column else "")


def filter_rows(
    raw: pd.DataFrame, lines: np.ndarray, where: Mapping[str, Sequence[object]], source: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``raw`` whose every ``where`` column holds one of its listed values.

    Cells and listed values are compared as text with surrounding spaces removed (YAML reads
    ``[1, 2]`` as numbers, a table's cells are text). Each filter's removed rows are counted
    in the log, in the order the filters are given.

    Args:
        raw: the table's rows as text (:func:`~medxfer.data.tables.read_table`'s frame).
        lines: the physical line of each row (kept in step with the rows).
        where: column -> the values to keep (e.g. ``{"view": ["PA", "AP"]}``).
        source: the table, as messages name it.

    Returns:
        The kept rows (original index) and their lines.

    Raises:
        TableError: a filter names a column the table does not have, or lists no value.
    """
    for column, values in where.items():
        if column not in raw.columns:
            raise TableError(
                f"{source}: where: no column {column!r} to filter on; found {list(raw.columns)}"
            )
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise TableError(
                f"{source}: where: {column!r} needs a list of values to keep, got {values!r}"
            )
        allowed = {str(v).strip() for v in values}
        keep = raw[column].str.strip().isin(allowed).to_numpy()
        log.info(
            "%s: where %s in %s: kept %d of %d rows (removed %d)",
            source,
            column,
            sorted(allowed),
            int(keep.sum()),
            len(keep),
            int((~keep).sum()),
        )
        raw, lines = raw[keep], lines[keep]
    return raw, lines


def read_image_table(
    path: str | Path,
    image_columns: Sequence[str],
    root: str | Path | None = None,
    patient_column: str | None = None,
    id_column: str | None = None,
    split_column: str | None = None,
    columns: Sequence[str] = (),
    drop_duplicates: bool = False,
    where: Mapping[str, Sequence[object]] | None = None,
) -> pd.DataFrame:
    """Read a user's image table into the template's rows.

    Rows outside the ``where`` filters are removed first (:func:`filter_rows`, counted in the
    log), so a row the study does not use is never checked. Checked on every kept row: at least one image path; the patient and id not blank; no case
    listed twice (the same id, or without an id column the same image path(s)); the split
    value. ``columns`` are only required to exist: their values are checked by the caller
    (the datamodule checks the target, sex and age columns; other group columns are free
    text, groups as written).

    Args:
        path: the CSV / Parquet file.
        image_columns: column(s) of image paths; several make each row a case of images
            (blank cells: fewer images).
        root: folder image paths are relative to (default: the table's folder).
        patient_column: the patient identifier (default: each row its own patient).
        id_column: the case id (default: ``<table name>-<line>``, the row's physical line in
            the file -- the number every error names -- so ids join back to the file by line;
            never a path or patient).
        split_column: ``train`` / ``val`` (``valid``, ``validation``) / ``test`` per row.
        columns: further columns that must exist (target, groups), kept as text.
        drop_duplicates: drop a repeated row equal to the first (counted and logged) instead
            of failing.
        where: column -> values to keep (``{"view": ["PA", "AP"]}``); the columns must exist.

    Returns:
        Rows with ``path`` (one image column) or ``paths``, ``id``, ``patient_id``, ``line``,
        ``source``, ``split`` (with ``split_column``) and ``columns``.

    Raises:
        TableError: a missing column, an empty table (or none left by ``where``), a row
            without an image, a blank patient or id, a repeated case, an unknown split value; the message names file, line and
            column.
    """
    path = Path(path)
    table = read_table(path, skipinitialspace=True)  # CSV, TSV or Parquet, every column text
    raw, lines = table.frame, table.lines
    parquet = path.name.lower().endswith(".parquet")
    needed = [*image_columns, *columns]
    needed += [c for c in (patient_column, id_column, split_column) if c]
    check_columns(raw, dict.fromkeys(needed), str(path))
    if where:
        raw, lines = filter_rows(raw, lines, where, str(path))
        if raw.empty:
            raise TableError(f"{path}: no row is left by the filters where={dict(where)}")
        raw = raw.reset_index(drop=True)
    for column in (patient_column, id_column):
        blank = (raw[column].str.strip() == "").to_numpy() if column else np.zeros(0, bool)
        if blank.any():
            raise TableError(
                f"{_where(path, parquet, lines[np.flatnonzero(blank)[0]], column)}: blank"
            )
    key = [id_column] if id_column else list(image_columns)
    keep = check_duplicates(raw, key, lines, str(path), "case", drop_duplicates)
    base = Path(root) if root is not None else path.parent
    out = pd.DataFrame(index=raw.index)
    cells = raw[list(image_columns)].to_numpy()
    paths = [[str(base / p) if p else "" for p in row] for row in cells]
    for k, row in enumerate(paths):
        if not any(row):
            raise TableError(f"{_where(path, parquet, lines[k], image_columns[0])}: no image path")
    if len(image_columns) == 1:
        out["path"] = [row[0] for row in paths]
    else:
        out["paths"] = [[p for p in row if p] for row in paths]
    # the default id is the physical line (as errors name rows), not the data row's number
    out["id"] = raw[id_column] if id_column else [f"{path.stem}-{line}" for line in lines]
    # without a patient column each row is its own patient, unique across tables (the table's
    # resolved path and line; internal to splitting, never part of a batch)
    out["patient_id"] = (
        raw[patient_column] if patient_column else [f"{path.resolve()}#{line}" for line in lines]
    )
    if split_column:
        split = raw[split_column].str.strip().str.lower().map(SPLIT_NAMES)
        bad = split.isna()
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(
                f"{_where(path, parquet, lines[k], split_column)}: split value {raw[split_column].iloc[k]!r}; "
                f"expected one of {sorted(SPLIT_NAMES)}"
            )
        out["split"] = split
    for c in columns:
        out[c] = raw[c].str.strip()
    out["line"] = lines
    out["source"] = str(path)
    return out[keep].reset_index(drop=True)


def read_image_folder(root: str | Path, class_column: str = "class") -> pd.DataFrame:
    """An image folder ``root/<class>/<image>`` as the rows of a ``class`` table (each image its
    own patient, ids ``<class>-<n>``); ``line`` is the image's position in the sorted listing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        rows += [(str(p), folder.name, f"{folder.name}-{k + 1}") for k, p in enumerate(images)]
    if not rows:
        raise TableError(
            f"{root}: no images in class folders (expected {root}/<class>/<image>, suffixes "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    out = pd.DataFrame(rows, columns=["path", class_column, "id"])
    out["patient_id"] = [str(Path(p).resolve()) for p in out["path"]]  # each image its own
    out["line"] = np.arange(1, len(out) + 1)
    out["source"] = f"image folder {root}"
    return out
