"""Exam lists of 4-view screening mammography, and the outcome labels at several horizons.

One row per image: ``exam_id, patient_id, laterality (L/R), view (CC/MLO), image_path`` (DICOM,
or 8/16-bit PNG), ``cancer_months`` (months from the exam to a biopsy-confirmed cancer; blank =
none observed), ``followup_months``, ``density`` (BI-RADS A-D) and optionally ``site``.
Rows are grouped into exams of exactly four views in the fixed order L-CC, R-CC, L-MLO, R-MLO.

Every column but ``site`` (free text, a group as written) is checked on every row: ids and
image paths not blank, laterality and view in their lists, months non-negative numbers,
density A-D or blank, one row per view of an exam, and the exam's columns equal on its rows.

Horizon labels follow Mustafa et al. (2021) (after McKinney et al., Nature 2020): for a horizon
of h months, an exam is positive when cancer occurred within h months, negative only when
follow-up covers h months without cancer, and otherwise unknown (masked in the loss and
metrics).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medxfer.data.tables import TableError, check_columns, check_duplicates, read_table

__all__ = [
    "DEFAULT_HORIZONS",
    "EXAM_COLUMNS",
    "VIEW_ORDER",
    "convert_cbis_ddsm",
    "convert_vindr",
    "horizon_labels",
    "horizon_names",
    "read_exam_list",
]

log = logging.getLogger(__name__)

VIEW_ORDER: tuple[tuple[str, str], ...] = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))
DEFAULT_HORIZONS: tuple[int, ...] = (3, 12, 15, 27, 39)
_REQUIRED = (
    "exam_id",
    "patient_id",
    "laterality",
    "view",
    "image_path",
    "cancer_months",
    "followup_months",
    "density",
)


def horizon_names(horizons: Sequence[int]) -> list[str]:
    """Label names of the horizons: ``["3m", "12m", ...]``."""
    return [f"{h}m" for h in horizons]


def horizon_labels(
    cancer_months: float, followup_months: float, horizons: Sequence[int]
) -> list[float]:
    """1 if cancer within h months; 0 if follow-up covers h without cancer in h; else NaN."""
    out = []
    for h in horizons:
        if not np.isnan(cancer_months) and cancer_months <= h:
            out.append(1.0)
        elif followup_months >= h or (not np.isnan(cancer_months) and cancer_months > h):
            out.append(0.0)
        else:
            out.append(float("nan"))
    return out


def _months(
    raw: pd.DataFrame, lines: np.ndarray, col: str, path: Path, blank_ok: bool
) -> np.ndarray:
    text = raw[col].str.strip()
    values = pd.to_numeric(text.replace("", np.nan), errors="coerce").to_numpy(dtype=float)
    bad = (np.isnan(values) & (text != "").to_numpy()) | (values < 0)
    if not blank_ok:
        bad |= (text == "").to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(
            f"{path}: line {lines[i]}, column {col!r}: {raw[col].iloc[i]!r} is not a non-negative number of months"
        )
    return values


def read_exam_list(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    allow_missing_views: bool = False,
    drop_duplicates: bool = False,
) -> pd.DataFrame:
    """Read an exam list into one row per exam.

    Args:
        path: the CSV (one row per image).
        image_root: folder image paths are relative to (default: the CSV's folder).
        horizons: outcome horizons in months.
        allow_missing_views: an exam lacking a view gets an empty path and a False mask entry
            (the view is a zero image) instead of an error.
        drop_duplicates: drop a row that repeats another (same exam, view and image, equal
            in every column; counted and logged) instead of failing.

    Returns:
        Columns ``id, patient_id, paths`` (4, in :data:`VIEW_ORDER`), ``mask`` (4 bools),
        ``cancer_months, followup_months, density, site, source, line`` and one float column per
        horizon (``3m`` ...: 1, 0 or NaN).

    Raises:
        TableError: missing columns, a blank id or image path, an unknown laterality / view
            (listing accepted values), a repeated row, a duplicate view, a missing view (unless
            allowed), bad months or density, exam columns that differ between its rows; each
            names the line.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    table = read_table(path, required=_REQUIRED)
    raw, lines = table.frame, table.lines
    for col in ("exam_id", "patient_id", "image_path"):
        blank = (raw[col].str.strip() == "").to_numpy()
        if blank.any():
            raise TableError(
                f"{path}: line {lines[int(np.flatnonzero(blank)[0])]}, column {col!r}: blank"
            )
    raw["laterality"] = raw["laterality"].str.strip().str.upper()
    raw["view"] = raw["view"].str.strip().str.upper()
    for col, accepted in (("laterality", ("L", "R")), ("view", ("CC", "MLO"))):
        bad = ~raw[col].isin(accepted)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(
                f"{path}: line {lines[i]}, column {col!r}: {raw[col].iloc[i]!r} is not one of {list(accepted)}"
            )
    cancer = _months(raw, lines, "cancer_months", path, blank_ok=True)
    follow = _months(raw, lines, "followup_months", path, blank_ok=False)
    density = raw["density"].str.strip().str.upper().replace("", "unknown")
    bad = ~density.isin(["A", "B", "C", "D", "unknown"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(
            f"{path}: line {lines[i]}, column 'density': {raw['density'].iloc[i]!r} is not one of ['A', 'B', 'C', 'D'] or blank"
        )
    raw["_cancer"], raw["_follow"], raw["_density"], raw["_line"] = (
        cancer,
        follow,
        density,
        lines,
    )
    key = ["exam_id", "laterality", "view", "image_path"]
    raw = raw[check_duplicates(raw, key, raw["_line"], str(path), "image row", drop_duplicates)]
    exams = []
    for exam_id, rows in raw.groupby("exam_id", sort=False):
        first = rows.iloc[0]
        where = f"{path}, line {first['_line']}, exam {exam_id!r}"
        slots = {}
        for _, r in rows.iterrows():
            key = (r["laterality"], r["view"])
            if key in slots:
                raise TableError(
                    f"{where}: duplicate view {key[0]}-{key[1]} (lines {slots[key][1]} and {r['_line']}); an exam has one image per view in {['-'.join(v) for v in VIEW_ORDER]}"
                )
            slots[key] = (r["image_path"].strip(), r["_line"])
        missing = [f"{lat}-{view}" for lat, view in VIEW_ORDER if (lat, view) not in slots]
        if missing and not allow_missing_views:
            raise TableError(
                f"{where}: missing view(s) {missing}; set allow_missing_views to use zero images for them"
            )
        for col in (
            "_cancer",
            "_follow",
            "_density",
            "patient_id",
            *(["site"] if "site" in raw else []),
        ):
            values = rows[col].astype(str).unique()
            if len(values) > 1:
                raise TableError(
                    f"{where}: column {col.strip('_')!r} differs between the exam's rows: {list(values)}"
                )
        c, f = float(first["_cancer"]), float(first["_follow"])
        exams.append(
            {
                "id": str(exam_id),
                "patient_id": str(first["patient_id"]),
                "paths": [str(root / slots[v][0]) if v in slots else "" for v in VIEW_ORDER],
                "mask": [v in slots for v in VIEW_ORDER],
                "cancer_months": c,
                "followup_months": f,
                "density": first["_density"],
                "site": str(first.get("site", "") or "unknown"),
                "source": str(path),
                "line": int(first["_line"]),
                **dict(zip(horizon_names(horizons), horizon_labels(c, f, horizons), strict=True)),
            }
        )
    out = pd.DataFrame(exams)
    out.attrs.update(source=str(path), horizons=list(horizons))
    return out


#: Columns of a medxfer exam list, in the order the converters and the synthetic writer use.
EXAM_COLUMNS = [
    "exam_id",
    "patient_id",
    "laterality",
    "view",
    "image_path",
    "cancer_months",
    "followup_months",
    "density",
    "site",
]


def convert_vindr(
    breast_csv: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    followup_months: float = 39.0,
) -> Path:
    """VinDr-Mammo's ``breast-level_annotations.csv`` -> a medxfer exam list.

    VinDr has no outcomes over time: BI-RADS 4-5 breasts make their exam positive at month 0,
    and every exam gets ``followup_months`` (your assumption, stated in the call) so that
    BI-RADS 1-3 exams count as negatives up to that horizon. Images are expected at
    ``images/<study_id>/<image_id>.dicom`` beside the output CSV. VinDr has one study per woman,
    so the study id is also the patient id.
    """
    raw = pd.read_csv(breast_csv, dtype=str, keep_default_na=False)
    check_columns(
        raw,
        ["study_id", "image_id", "laterality", "view_position", "breast_birads", "breast_density"],
        str(breast_csv),
    )
    birads = raw["breast_birads"].str.extract(r"(\d)")[0].astype(float)
    positive = birads.groupby(raw["study_id"]).transform("max") >= 4
    out = pd.DataFrame(
        {
            "exam_id": raw["study_id"],
            "patient_id": raw["study_id"],
            "laterality": raw["laterality"],
            "view": raw["view_position"],
            "image_path": "images/" + raw["study_id"] + "/" + raw["image_id"] + ".dicom",
            "cancer_months": np.where(positive, "0", ""),
            "followup_months": f"{followup_months:g}",
            "density": raw["breast_density"].str.extract(r"([A-D])\s*$")[0].fillna(""),
            "site": "vindr",
        }
    )
    out_csv = Path(out_csv)
    out[EXAM_COLUMNS].to_csv(out_csv, index=False)
    return out_csv


def convert_cbis_ddsm(
    case_csvs: Sequence[str | os.PathLike[str]],
    out_csv: str | os.PathLike[str],
    followup_months: float = 39.0,
) -> Path:
    """CBIS-DDSM's case description CSVs (mass / calc, train / test) -> a medxfer exam list.

    One image per patient, breast and view (several abnormalities of one image are merged); an
    exam is a patient, positive at month 0 when any abnormality is ``MALIGNANT``. CBIS-DDSM holds
    only views with findings, so read the result with ``allow_missing_views=True``.
    ``followup_months`` is the assumption that makes benign exams negatives.
    """
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in case_csvs]
    raw = pd.concat(frames, ignore_index=True)
    if "breast density" not in raw.columns and "breast_density" in raw.columns:
        raw["breast density"] = raw["breast_density"]
    raw["breast density"] = raw["breast density"].fillna("")
    check_columns(
        raw,
        [
            "patient_id",
            "left or right breast",
            "image view",
            "pathology",
            "image file path",
            "breast density",
        ],
        "CBIS-DDSM case CSVs",
    )
    images = (
        raw.groupby(["patient_id", "left or right breast", "image view"], sort=True)
        .agg(path=("image file path", "first"), density=("breast density", "first"))
        .reset_index()
    )
    malignant = (
        raw.assign(m=raw["pathology"].str.upper().eq("MALIGNANT")).groupby("patient_id")["m"].any()
    )
    letters = {"1": "A", "2": "B", "3": "C", "4": "D"}
    out = pd.DataFrame(
        {
            "exam_id": images["patient_id"],
            "patient_id": images["patient_id"],
            "laterality": images["left or right breast"].str[0].str.upper(),
            "view": images["image view"].str.upper(),
            "image_path": images["path"].str.strip(),
            "cancer_months": np.where(images["patient_id"].map(malignant), "0", ""),
            "followup_months": f"{followup_months:g}",
            "density": images["density"].str.strip().map(letters).fillna(""),
            "site": "cbis-ddsm",
        }
    )
    out_csv = Path(out_csv)
    out[EXAM_COLUMNS].to_csv(out_csv, index=False)
    return out_csv
