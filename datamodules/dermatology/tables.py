"""Readers for dermatology case tables: cases of 1-6 photos with a weighted differential.

The dermatology task of Mustafa et al. (2021) (after Liu et al., "A deep learning system for
differential diagnosis of skin diseases", Nature Medicine 2020) predicts a distribution over
skin conditions, aggregated from several dermatologists, from one to six consumer-grade
photographs of a case; skin type is the fairness attribute.

Two table layouts are read (plain functions, no image IO):

* one row per image: ``case_id, image_path, ...`` (case columns repeated on each row);
* one row per case with ``image_1_path ... image_N_path`` columns (as SCIN does).

Case columns: ``case_id`` and ``patient_id`` (default: the case id); the label as a weighted
``differential`` (``"Eczema:0.6|Psoriasis:0.4"`` or a dict literal such as SCIN's
``"{'Eczema': 0.6, 'Psoriasis': 0.4}"``) or a single ``label``; ``fitzpatrick`` (I-VI, 1-6,
FST1-FST6, or "none selected"); optional ``monk`` (Monk skin tone 1-10), ``sex`` (the shared
list :data:`~medxfer.data.tables.SEX_VALUES`), ``age_group``, ``site``.

Every one of these columns is checked on every row: ``case_id`` not blank, a case listed once
(one row per case) or each of its images once (one row per image), the case columns equal on
all rows of a case, the differential parses (its names in ``conditions`` when declared),
``fitzpatrick``, ``monk`` and ``sex`` in their lists. ``age_group`` and ``site`` are free text
(groups as written) and not checked.

The label space is the N most common conditions of the *training* split (by summed weight)
plus "Other"; :func:`soft_targets` maps every case onto it.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medxfer.data.tables import (
    TableError,
    check_columns,
    check_duplicates,
    close_names,
    near_duplicate_names,
    normalise_sex,
    parse_differential,
    read_table,
)

__all__ = [
    "OTHER",
    "build_label_space",
    "convert_scin",
    "parse_differential",
    "read_derm_cases",
    "soft_targets",
]

log = logging.getLogger(__name__)

OTHER = "Other"
_FITZPATRICK = {str(i): r for i, r in enumerate(("I", "II", "III", "IV", "V", "VI"), start=1)}
_NONE = "none selected"
#: Columns that describe a case (not an image): equal on every row of a case.
_CASE_COLUMNS = (
    "patient_id",
    "differential",
    "label",
    "fitzpatrick",
    "monk",
    "sex",
    "age_group",
    "site",
)


def _fitzpatrick(value: str, where: str) -> str:
    v = str(value).strip()
    key = re.sub(r"^(fst|type\s*)", "", v.lower())
    if key in _FITZPATRICK:
        return _FITZPATRICK[key]
    if v.upper() in _FITZPATRICK.values():
        return v.upper()
    if v.lower().replace("_", " ") in (_NONE, "", "none", "unknown", "nan"):
        return _NONE
    raise TableError(
        f"{where}, column 'fitzpatrick': {value!r} is not a Fitzpatrick type (I-VI, 1-6, FST1-FST6 or 'none selected')"
    )


def _monk(raw: pd.DataFrame, path: Path) -> pd.Series:
    """The Monk skin tone column as ``"1"``-``"10"`` or ``"unknown"`` (blank, unknown)."""
    text = raw["monk"].str.strip()
    number = pd.to_numeric(text, errors="coerce")
    unknown = text.str.lower().isin(["", "unknown", "none", "nan"])
    ok = unknown | (number.between(1, 10) & (number == number.round()))
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise TableError(
            f"{path}, line {raw['_line'].iloc[i]}, column 'monk': {raw['monk'].iloc[i]!r} is "
            "not a Monk skin tone (1-10) or blank"
        )
    return number.map(lambda v: "unknown" if v != v else str(int(v))).where(~unknown, "unknown")


def _check_case_columns(raw: pd.DataFrame, path: Path) -> None:
    """One row per image: a case's columns must be equal on all of its rows."""
    columns = [c for c in _CASE_COLUMNS if c in raw.columns]
    differs = raw.groupby("case_id", sort=False)[columns].nunique() > 1
    if differs.to_numpy().any():
        case, col = next((case, c) for case, row in differs.iterrows() for c in columns if row[c])
        rows = raw[raw["case_id"] == case]
        raise TableError(
            f"{path}, lines {', '.join(str(n) for n in rows['_line'])}, case {case!r}: column "
            f"{col!r} differs between the case's rows: {list(dict.fromkeys(rows[col]))}"
        )


def read_derm_cases(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    max_images: int = 6,
    truncate: bool = False,
    conditions: Sequence[str] | None = None,
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
) -> pd.DataFrame:
    """Read a dermatology case table in either layout (see the module docstring).

    Args:
        path: the CSV.
        image_root: folder that image paths are relative to (default: the CSV's folder).
        max_images: most images a case may have.
        truncate: keep the first ``max_images`` of a larger case instead of failing (counted
            and logged).
        conditions: the known condition names; a differential naming another is an error
            that suggests the closest known name (``Eczma`` -> ``Eczema``). Without it, a rare
            name that looks like a misspelling of a common one is warned about.
        drop_duplicates: drop a repeated case row (one row per case) or image row (one row
            per image) that equals the first (counted and logged) instead of failing.
        unknown_sex: read a ``sex`` value outside the shared list as ``Unknown`` (counted and
            logged) instead of failing.

    Returns:
        One row per case: ``id, patient_id, paths`` (list), ``differential`` (dict),
        ``top_label``, ``fitzpatrick``, ``monk``, ``sex``, ``age_group``, ``site``, ``source``,
        ``line`` (of the case's first row).

    Raises:
        TableError: a missing column, a blank case id, a repeated case or image row, case
            columns that differ between a case's rows, a case with no image or too many, a bad
            differential, an undeclared condition, a bad Fitzpatrick, Monk or sex value; each
            message names the file, line and case or column.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    table = read_table(path)
    raw = table.frame
    image_cols = sorted(
        (c for c in raw.columns if re.fullmatch(r"image_\d+_path", c)),
        key=lambda c: int(c.split("_")[1]),
    )
    if "image_path" in raw.columns and image_cols:
        raise TableError(f"{path}: has both 'image_path' and {image_cols}; use one layout")
    if "image_path" not in raw.columns and not image_cols:
        raise TableError(
            f"{path}: no image column; expected 'image_path' (one row per image) or 'image_1_path', ... (one row per case). Found {list(raw.columns)}"
        )
    label_col = "differential" if "differential" in raw.columns else "label"
    check_columns(raw, ["case_id", label_col, "fitzpatrick"], str(path))
    raw["_line"] = table.lines
    blank = (raw["case_id"].str.strip() == "").to_numpy()
    if blank.any():
        raise TableError(
            f"{path}, line {raw['_line'].iloc[int(np.flatnonzero(blank)[0])]}: blank case_id"
        )
    if image_cols:  # one row per case: a case twice would merge into one with twice the images
        keep = check_duplicates(raw, ["case_id"], raw["_line"], str(path), "case", drop_duplicates)
    else:
        keep = check_duplicates(
            raw,
            ["case_id", "image_path"],
            raw["_line"],
            str(path),
            "image of a case",
            drop_duplicates,
        )
    raw = raw[keep].reset_index(drop=True)
    if not image_cols:
        _check_case_columns(raw, path)
    if "sex" in raw.columns:
        raw["sex"] = normalise_sex(
            raw["sex"], lambda i: f"{path}, line {raw['_line'].iloc[i]}, column 'sex'", unknown_sex
        )
    if "monk" in raw.columns:
        raw["monk"] = _monk(raw, path)
    known = list(conditions) if conditions is not None else None
    cases = []
    truncated = 0
    for case_id, rows in raw.groupby("case_id", sort=False):
        first = rows.iloc[0]
        where = f"{path}, line {first['_line']}, case {case_id!r}"
        if image_cols:
            paths = [p for p in rows[image_cols].to_numpy().ravel().tolist() if str(p).strip()]
        else:
            paths = [p for p in rows["image_path"].tolist() if str(p).strip()]
        if not paths:
            raise TableError(f"{where}: the case has no image")
        if len(paths) > max_images:
            if not truncate:
                raise TableError(
                    f"{where}: the case has {len(paths)} images, more than max_images={max_images} (set truncate to keep the first {max_images})"
                )
            truncated += 1
            paths = paths[:max_images]
        diff = parse_differential(first[label_col], where)
        for name in diff:
            if known is not None and name not in known and name != OTHER:
                raise TableError(
                    f"{where}, column {label_col!r}: condition {name!r} is not in the declared "
                    f"conditions{close_names(name, known)}"
                )
        cases.append(
            {
                "id": str(case_id),
                "patient_id": str(first.get("patient_id", "") or case_id),
                "paths": [str(root / p) for p in paths],
                "differential": diff,
                "top_label": max(diff, key=lambda k: diff[k]),
                "fitzpatrick": _fitzpatrick(first["fitzpatrick"], where),
                "monk": str(first.get("monk", "") or "unknown"),
                "sex": str(first.get("sex", "Unknown")),
                "age_group": str(first.get("age_group", "") or "unknown"),
                "site": str(first.get("site", "") or "unknown"),
                "source": str(path),
                "line": int(first["_line"]),
            }
        )
    if truncated:
        log.warning(
            "%s: %d case(s) had more than %d images and were truncated", path, truncated, max_images
        )
    out = pd.DataFrame(cases)
    if known is None:
        weights: Counter[str] = Counter()
        for diff in out["differential"]:
            weights.update(diff)
        for rare, common in near_duplicate_names(weights):
            log.warning(
                "%s: condition %r (weight %.3g) looks like a misspelling of %r (weight %.3g); "
                "declare the conditions to make this an error",
                path,
                rare,
                weights[rare],
                common,
                weights[common],
            )
    out.attrs.update(source=str(path), truncated=truncated)
    return out


def build_label_space(train: pd.DataFrame, n: int = 26) -> list[str]:
    """The ``n`` most common conditions of the training cases (by summed differential weight,
    ties by name) followed by "Other"."""
    counts: Counter[str] = Counter()
    for diff in train["differential"]:
        counts.update(diff)
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    top = [c for c in ranked if c != OTHER][:n]
    return [*top, OTHER]


def soft_targets(cases: pd.DataFrame, label_space: Sequence[str], what: str = "") -> np.ndarray:
    """``(N, K)`` soft targets on ``label_space`` (whose last entry is "Other"); conditions
    outside it add their weight to "Other" and are counted in the log."""
    index = {c: k for k, c in enumerate(label_space)}
    other = index[OTHER]
    out = np.zeros((len(cases), len(label_space)), dtype=np.float32)
    outside: Counter[str] = Counter()
    for i, diff in enumerate(cases["differential"]):
        for cond, w in diff.items():
            k = index.get(cond)
            if k is None:
                outside[cond] += 1
                k = other
            out[i, k] += w
    if outside:
        log.info(
            "%s: %d condition name(s) outside the label space mapped to %r: %s",
            what or "cases",
            len(outside),
            OTHER,
            dict(outside.most_common(10)),
        )
    return out


def convert_scin(
    cases_csv: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
) -> Path:
    """Convert SCIN's ``scin_cases.csv`` + ``scin_labels.csv`` into medxfer's case table.

    Joins on ``case_id``; ``image_1_path``-``image_3_path`` stay as they are (relative to the
    folder holding ``dataset/``); ``weighted_skin_condition_label`` becomes ``differential``;
    Fitzpatrick from the first dermatologist label when present, else self-reported
    ``fitzpatrick_skin_type``; Monk tone from ``monk_skin_tone_label_us``. Cases without a
    weighted label (not gradable by dermatologists) are left out and counted in the log.
    """
    cases = pd.read_csv(cases_csv, dtype=str, keep_default_na=False)
    labels = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    check_columns(cases, ["case_id", "image_1_path"], str(cases_csv))
    check_columns(labels, ["case_id", "weighted_skin_condition_label"], str(labels_csv))
    merged = cases.merge(labels, on="case_id", how="inner", suffixes=("", "_label"))
    labelled = merged[~merged["weighted_skin_condition_label"].str.strip().isin(["", "{}"])]
    dropped = len(merged) - len(labelled)
    if dropped:
        log.warning("SCIN: %d case(s) without a weighted dermatologist label left out", dropped)

    def col(name: str) -> pd.Series:
        return (
            labelled[name]
            if name in labelled.columns
            else pd.Series([""] * len(labelled), index=labelled.index)
        )

    fitz = col("dermatologist_fitzpatrick_skin_type_label_1").where(
        col("dermatologist_fitzpatrick_skin_type_label_1") != "", col("fitzpatrick_skin_type")
    )
    out = pd.DataFrame(
        {
            "case_id": labelled["case_id"],
            "patient_id": labelled["case_id"],
            **{
                c: labelled[c]
                for c in sorted(labelled.columns)
                if re.fullmatch(r"image_\d+_path", c)
            },
            "differential": labelled["weighted_skin_condition_label"],
            "fitzpatrick": fitz.replace("", _NONE),
            "monk": col("monk_skin_tone_label_us"),
            "sex": col("sex_at_birth"),
            "age_group": col("age_group"),
            "site": "scin",
        }
    )
    out_csv = Path(out_csv)
    out.to_csv(out_csv, index=False)
    return out_csv
