"""Readers for the chest X-ray metadata tables: CheXpert and NIH ChestX-ray14.

Plain functions, no image IO (DESIGN.md), each returning one validated table with the columns
``path, id, patient_id, sex, age, view`` plus one float column per label (1 positive,
0 negative, NaN unknown: masked in the loss and the metrics).

* CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` with
  ``Path,Sex,Age,Frontal/Lateral,AP/PA`` and 14 observation columns holding 1.0 / 0.0 / -1.0
  (uncertain) / blank (not mentioned). Uncertainty policies of the CheXpert paper: ``ones``
  (U-Ones, used by Mustafa et al. 2021), ``zeros`` (U-Zeros), ``ignore`` (masked). Blank is
  negative.
* NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017.csv`` or
  ``Data_Entry_2017_v2020.csv``, findings separated by ``|``, whose header has commas inside
  ``OriginalImage[Width,Height]``; optional ``train_val_list.txt`` / ``test_list.txt``. Labels
  may be NIH findings or CheXpert observations (mapped; those NIH lacks are NaN, not negative).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medxfer.data.tables import TableError, check_columns, csv_line

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
_NIH_META = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
)


def _check_labels(labels: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    labels = list(labels)
    unknown = [lab for lab in labels if lab not in known]
    if unknown or not labels:
        raise ValueError(
            f"unknown {what} label(s) {unknown or '(none given)'}; choose from {list(known)}"
        )
    return labels


def read_chexpert_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    uncertainty: Uncertainty = "ones",
    frontal_only: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read a CheXpert ``train.csv`` / ``valid.csv``.

    Args:
        path: the CSV.
        labels: observations to keep (default: the 5 competition labels).
        uncertainty: what -1.0 becomes: ``ones`` -> 1, ``zeros`` -> 0, ``ignore`` -> NaN.
        frontal_only: keep frontal images only.
        root: the folder that holds ``CheXpert-v1.0.../`` (``Path`` is relative to it);
            default: the CSV's grandparent.

    Returns:
        The validated table (see the module docstring); ``attrs["labels"]`` holds ``labels``.

    Raises:
        TableError: a missing column, or a label value outside {1, 0, -1, blank} (naming the
            line and column).
    """
    path = Path(path)
    labels = _check_labels(labels, CHEXPERT_LABELS, "CheXpert")
    if uncertainty not in ("ones", "zeros", "ignore"):
        raise ValueError(f"uncertainty must be 'ones', 'zeros' or 'ignore', got {uncertainty!r}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise TableError(f"{path}: not a readable CheXpert CSV: {err}") from None
    check_columns(raw, [*_CHEXPERT_META, *labels], str(path))
    root = Path(root) if root is not None else path.resolve().parent.parent
    out = pd.DataFrame(index=raw.index)
    out["path"] = [str(root / p) for p in raw["Path"]]
    parts = raw["Path"].str.extract(r"(patient\d+)/(study\d+)/([^/.]+)")
    if parts.isna().any(axis=None):
        bad = int(np.flatnonzero(parts.isna().any(axis=1).to_numpy())[0])
        raise TableError(
            f"{path}: line {csv_line(bad)}, column Path: {raw['Path'].iloc[bad]!r} is not of the form "
            "<...>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
        )
    out["id"] = parts[0] + "_" + parts[1] + "_" + parts[2]
    out["patient_id"] = parts[0]
    out["sex"] = raw["Sex"].replace("", "Unknown")
    out["age"] = _numeric(raw["Age"], path, "Age")
    out["view"] = np.where(
        raw["Frontal/Lateral"] == "Lateral", "Lateral", raw["AP/PA"].replace("", "Unknown")
    )
    uncertain_value = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertainty]
    for lab in labels:
        col = raw[lab].str.strip()
        ok = col.isin(["1.0", "1", "0.0", "0", "-1.0", "-1", ""])
        if not ok.all():
            bad = int(np.flatnonzero(~ok.to_numpy())[0])
            raise TableError(
                f"{path}: line {csv_line(bad)}, column {lab!r}: value {col.iloc[bad]!r} is not one of "
                "1.0, 0.0, -1.0 or blank"
            )
        values = pd.to_numeric(col.replace("", "0")).astype(float)
        out[lab] = values.where(values != -1.0, uncertain_value)
    out["source"], out["line"] = str(path), [csv_line(i) for i in range(len(raw))]
    if frontal_only:
        out = out[raw["Frontal/Lateral"] != "Lateral"]
        if out.empty:
            raise TableError(
                f"{path}: no rows left after frontal_only=True (every image is lateral)"
            )
    out.attrs.update(labels=labels, source=str(path))
    return out


def _numeric(col: pd.Series, path: Path, name: str) -> pd.Series:
    """Ages such as ``57`` or NIH 2017's ``057Y``; a value that is neither is an error."""
    text = col.astype(str).str.strip().str.replace(r"^(\d+)[YyMmDd]$", r"\1", regex=True)
    values = pd.to_numeric(text.replace("", np.nan), errors="coerce")
    bad = values.isna() & (text != "") & text.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(
            f"{path}: line {csv_line(i)}, column {name!r}: {col.iloc[i]!r} is not a number"
        )
    return values.astype(float)


def _read_nih_frame(path: Path) -> pd.DataFrame:
    """Read the Data_Entry CSV whose header names hold commas inside brackets.

    ``OriginalImage[Width,Height]`` is one header name but two fields in every row; it becomes
    the columns ``OriginalImage[Width]`` and ``OriginalImage[Height]``. The 2017 file's trailing
    empty column is dropped.
    """
    text = path.read_text(encoding="utf-8-sig")
    header_line, _, body = text.partition("\n")
    names: list[str] = []
    for name in re.split(r",(?![^\[]*\])", header_line.strip()):
        m = re.fullmatch(r"(.*)\[(.*)\]", name)
        names += (
            [f"{m.group(1)}[{p.strip()}]" for p in m.group(2).split(",")]
            if m and "," in m.group(2)
            else [name]
        )
    while names and names[-1] == "":
        names.pop()
    rows = list(csv.reader(io.StringIO(body)))
    width = len(names)
    for i, row in enumerate(rows):
        if row and len(row) > width and not any(row[width:]):
            rows[i] = row[:width]
    rows = [r for r in rows if r]
    bad = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise TableError(
            f"{path}: line {csv_line(bad)} has {len(rows[bad])} fields, the header {width}: {names}"
        )
    return pd.DataFrame(rows, columns=names, dtype=str).apply(lambda c: c.str.strip())


def read_split_list(path: str | os.PathLike[str]) -> set[str]:
    """Image names of an NIH split list (``train_val_list.txt`` / ``test_list.txt``)."""
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def read_nih_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    image_dir: str | os.PathLike[str] | None = None,
    split_list: str | os.PathLike[str] | None = None,
    frontal_only: bool = False,
) -> pd.DataFrame:
    """Read NIH ChestX-ray14's ``Data_Entry_2017*.csv``.

    Args:
        path: the CSV.
        labels: NIH findings (``Effusion``, ``Infiltration``...) and/or CheXpert observations
            (mapped through :data:`NIH_TO_CHEXPERT`; unknown, i.e. NaN, where NIH has no
            counterpart).
        image_dir: the folder holding the PNGs (default: ``images/`` beside the CSV).
        split_list: keep only the images named in this list file.
        frontal_only: accepted for symmetry with CheXpert; NIH images are all frontal.

    Raises:
        TableError: a missing column, an unknown finding (naming line), a non-numeric age.
    """
    del frontal_only  # every ChestX-ray14 image is frontal (PA or AP)
    path = Path(path)
    labels = _check_labels(
        labels, list(dict.fromkeys([*NIH_FINDINGS, *CHEXPERT_LABELS])), "NIH/CheXpert"
    )
    raw = _read_nih_frame(path)
    check_columns(raw, _NIH_META, str(path))
    image_dir = Path(image_dir) if image_dir is not None else path.parent / "images"
    findings = raw["Finding Labels"].str.split("|")
    known = set(NIH_FINDINGS)
    for i, items in enumerate(findings):
        unknown = [f for f in items if f not in known]
        if unknown:
            raise TableError(
                f"{path}: line {csv_line(i)}, column 'Finding Labels': unknown finding(s) {unknown}; "
                f"expected names from {list(NIH_FINDINGS)}"
            )
    out = pd.DataFrame(index=raw.index)
    out["path"] = [str(image_dir / name) for name in raw["Image Index"]]
    out["id"] = raw["Image Index"].str.replace(r"\.png$", "", regex=True)
    out["patient_id"] = "nih" + raw["Patient ID"].str.strip()
    out["sex"] = raw["Patient Gender"].map({"M": "Male", "F": "Female"}).fillna("Unknown")
    out["age"] = _numeric(raw["Patient Age"], path, "Patient Age")
    out["view"] = raw["View Position"].str.strip()
    sets = findings.map(set)
    for lab in labels:
        if lab in known:
            out[lab] = sets.map(lambda s, lab=lab: float(lab in s))
        else:
            sources = [f for f, c in NIH_TO_CHEXPERT.items() if c == lab]
            out[lab] = (
                sets.map(lambda s, src=sources: float(bool(s & set(src)))) if sources else np.nan
            )
    out["source"], out["line"] = str(path), [csv_line(i) for i in range(len(raw))]
    if split_list is not None:
        keep = read_split_list(split_list)
        out = out[raw["Image Index"].isin(keep)]
        if out.empty:
            raise TableError(f"{path}: no rows left after filtering by split list {split_list}")
    out.attrs.update(labels=labels, source=str(path))
    return out
