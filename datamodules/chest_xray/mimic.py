"""Reader for MIMIC-CXR-JPG (Johnson et al., 2019; PhysioNet versions 2.0.0 and 2.1.0).

The release is a folder of JPEGs and four gzip-compressed tables, named
``mimic-cxr-2.0.0-<table>.csv.gz`` in both versions:

* ``-metadata``: one row per image: ``dicom_id, subject_id, study_id,
  PerformedProcedureStepDescription, ViewPosition, Rows, Columns, StudyDate, StudyTime, ...``.
  ``ViewPosition`` is blank for about 16k images;
* ``-chexpert`` / ``-negbio``: labels per *study* (``subject_id, study_id`` and the 14 CheXpert
  observations: 1.0 / 0.0 / -1.0 uncertain / blank not mentioned), from two report labelers;
  about 2.4k studies have no label row;
* ``-split``: the official split, ``dicom_id, study_id, subject_id, split`` with ``split`` one of
  ``train`` / ``validate`` / ``test``; every patient is in one split;
* images: ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (``p`` + the subject's first two
  digits, ``p`` + subject, ``s`` + study).

Sex and age are not in MIMIC-CXR: they come from MIMIC-IV's ``patients.csv[.gz]``
(``subject_id, gender, anchor_age, anchor_year, ...``) when given. MIMIC-CXR's dates are
shifted consistently with MIMIC-IV's, so the age at a study is ``anchor_age + (study year -
anchor_year)``; without ``anchor_year`` or ``StudyDate`` it is ``anchor_age``.

Labels follow the CheXpert reader's policies (:func:`~.tables.read_chexpert_csv`): blank
(not mentioned) is negative, -1.0 goes through the uncertainty policy. ``No Finding`` changes
no other label: the labels are read as the labeler wrote them. (torchxrayvision zeroes every
label but Support Devices where ``No Finding`` is 1, for CheXpert only; medxfer applies that
rule to neither set, so the two read alike.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medxfer.data.tables import (
    Table,
    TableError,
    check_age,
    check_duplicates,
    normalise_sex,
    read_table,
)

from .tables import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    UNCERTAINTY_POLICIES,
    Uncertainty,
    _check_labels,
    _chexpert_values,
    _label_block,
    _take,
    uncertain_bits,
)

__all__ = ["MIMIC_SPLITS", "MIMIC_VIEWS", "mimic_table", "read_mimic_cxr"]

log = logging.getLogger(__name__)

#: The prefix both releases (2.0.0 and 2.1.0) give their tables.
MIMIC_PREFIX = "mimic-cxr-2.0.0"
#: The values of the official split file's ``split`` column.
MIMIC_SPLITS: tuple[str, ...] = ("train", "validate", "test")
#: ``ViewPosition`` -> view group. Frontal projections keep their name; lateral ones are one
#: group (what ``frontal_only`` drops); decubitus, axial, oblique and swimmer's views are
#: ``Other``; blank is ``Unknown``. A value not listed is read as ``Other``, counted and logged.
MIMIC_VIEWS: dict[str, str] = {
    "PA": "PA", "AP": "AP", "LATERAL": "Lateral", "LL": "Lateral", "XTABLE LATERAL": "Lateral",
    "AP AXIAL": "Other", "AP LLD": "Other", "AP RLD": "Other", "PA LLD": "Other",
    "PA RLD": "Other", "LAO": "Other", "RAO": "Other", "LPO": "Other", "SWIMMERS": "Other",
    "": "Unknown",
}  # fmt: skip

Labeler = Literal["chexpert", "negbio"]


def mimic_table(folder: str | os.PathLike[str], kind: str) -> Path:
    """The release's table ``kind`` (``metadata``, ``chexpert``, ``negbio``, ``split``) in
    ``folder``: ``mimic-cxr-2.0.0-<kind>.csv.gz``, or the ``.csv`` a user decompressed.

    Raises:
        FileNotFoundError: neither file exists (naming both and where they come from).
    """
    folder = Path(folder)
    gz = folder / f"{MIMIC_PREFIX}-{kind}.csv.gz"
    for path in (gz, gz.with_suffix("")):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{gz}: no such file (nor {gz.with_suffix('').name}); MIMIC-CXR-JPG's tables come from "
        "https://physionet.org/content/mimic-cxr-jpg/ and sit beside its files/ folder"
    )


def _ids(table: Table, column: str) -> np.ndarray:
    """An integer id column (``subject_id``, ``study_id``); blank or not an integer is an
    error naming the file, line and column."""
    col = table.frame[column]
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(
            f"{table.source}: line {table.lines[i]}, column {column!r}: {col.iloc[i]!r} is not "
            "a non-negative integer"
        )
    return values.astype(np.int64)


def _study_labels(
    path: Path, labels: Sequence[str], uncertainty: Uncertainty, lsr_seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The label table, one row per study: ``(subject_id, study_id)`` keys, the chosen labels
    under ``uncertainty`` (``(studies, len(labels))``) and their uncertain bits. Every observation column present is
    checked (1.0, 0.0, -1.0 or blank); a study listed twice is an error."""
    table = read_table(
        path,
        required=["subject_id", "study_id", *labels],
        numeric=("subject_id", "study_id", *CHEXPERT_LABELS),
        text=(),
    )
    keys = pd.DataFrame(
        {"subject_id": _ids(table, "subject_id"), "study_id": _ids(table, "study_id")}
    )
    present = [lab for lab in CHEXPERT_LABELS if lab in table.frame.columns]
    values = _chexpert_values(table, present, path)
    check_duplicates(keys, ["subject_id", "study_id"], table.lines, table.source, "study")
    study = keys["subject_id"].astype(str) + "/" + keys["study_id"].astype(str)
    block = _label_block(values, labels, uncertainty, study, lsr_seed)
    return keys, block, uncertain_bits(values, labels)


def _official_split(path: Path, dicom_ids: pd.Series, where: np.ndarray, source: str) -> pd.Series:
    """The official split of each image (``dicom_ids``, from the metadata table at lines
    ``where``). The split file's ``split`` values and its patient-level disjointness are
    checked; an image the split file does not list is an error naming its metadata line."""
    table = read_table(
        path, required=["dicom_id", "subject_id", "split"], numeric=(), text=("dicom_id", "split")
    )
    frame, lines = table.frame, table.lines
    split = frame["split"].str.strip()
    bad = ~split.isin(MIMIC_SPLITS).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(
            f"{table.source}: line {lines[i]}, column 'split': {frame['split'].iloc[i]!r} is not "
            f"one of {', '.join(MIMIC_SPLITS)}"
        )
    subjects = _ids(table, "subject_id")
    per_patient = pd.DataFrame({"subject": subjects, "split": split}).drop_duplicates()
    twice = per_patient["subject"].duplicated(keep=False).to_numpy()
    if twice.any():
        subject = int(per_patient["subject"].to_numpy()[twice][0])
        rows = np.flatnonzero(subjects == subject)
        found = sorted(set(split.iloc[rows]))
        raise TableError(
            f"{table.source}: patient {subject} is in splits {found} (lines "
            f"{', '.join(str(n) for n in lines[rows][:5])}); the official split keeps each "
            "patient in one"
        )
    dicom = frame["dicom_id"].str.strip()
    keep = check_duplicates(
        pd.DataFrame({"dicom_id": dicom, "split": split}), ["dicom_id"], lines, table.source,
        "image", drop=True,
    )  # fmt: skip
    by_image = pd.Series(split[keep].to_numpy(), index=dicom[keep].to_numpy())
    out = dicom_ids.map(by_image)
    missing = out.isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise TableError(
            f"{source}: line {where[i]}, column 'dicom_id': image {dicom_ids.iloc[i]!r} is not "
            f"in the split file {table.source} ({int(missing.sum())} image(s) missing)"
        )
    return out


def _demographics(
    path: Path, subjects: np.ndarray, study_years: np.ndarray, unknown_sex: bool
) -> tuple[pd.Series, np.ndarray]:
    """Sex and age at the study of each image's subject, from MIMIC-IV's ``patients`` table.
    A subject the table lacks is Unknown / NaN (counted and logged)."""
    table = read_table(
        path,
        required=["subject_id", "gender", "anchor_age"],
        numeric=("subject_id", "anchor_age", "anchor_year"),
        text=("gender",),
    )
    frame, lines = table.frame, table.lines
    ids = _ids(table, "subject_id")
    check_duplicates(
        pd.DataFrame({"subject_id": ids}), ["subject_id"], lines, table.source, "patient"
    )
    sex = normalise_sex(
        frame["gender"], lambda i: f"{table.source}: line {lines[i]}, column 'gender'", unknown_sex
    )
    anchor_age = pd.to_numeric(frame["anchor_age"], errors="coerce").to_numpy(dtype=float)
    check_age(anchor_age, lambda i: f"{table.source}: line {lines[i]}, column 'anchor_age'")
    row = pd.Index(ids).get_indexer(subjects)
    known = row >= 0
    if not known.all():
        log.warning(
            "%s: %d image(s) of %d patient(s) not in the table: sex Unknown, age unknown",
            table.source,
            int((~known).sum()),
            len(np.unique(subjects[~known])),
        )
    age = np.where(known, anchor_age[row], np.nan)
    if "anchor_year" in frame.columns:
        anchor_year = pd.to_numeric(frame["anchor_year"], errors="coerce").to_numpy(dtype=float)
        shift = study_years - np.where(known, anchor_year[row], np.nan)
        age = np.where(np.isfinite(shift), age + shift, age)
    out = np.where(known, sex.to_numpy(dtype=object)[row], "Unknown")
    return pd.Series(out, dtype=sex.dtype), age


def read_mimic_cxr(
    metadata: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    uncertainty: Uncertainty = "ones",
    frontal_only: bool = False,
    split: Literal["train", "validate", "test", "all"] | None = None,
    labeler: Labeler = "chexpert",
    root: str | os.PathLike[str] | None = None,
    patients: str | os.PathLike[str] | None = None,
    unlabelled: Literal["drop", "error"] = "drop",
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
    lsr_seed: int = 0,
) -> pd.DataFrame:
    """Read MIMIC-CXR-JPG: one row per image, with its study's labels.

    The labels of the chosen labeler's table (``mimic-cxr-2.0.0-<labeler>.csv.gz`` beside
    ``metadata``) join the images on ``(subject_id, study_id)``. An image whose study has no
    label row (about 2.4k studies of the release) is dropped and counted (``unlabelled:
    drop``, the default: an unlabelled study is not a negative one) or an error
    (``unlabelled: error``).

    Checked: ``dicom_id`` is not blank and no image is listed twice; ``subject_id`` and
    ``study_id`` are integers; every observation column of the label table holds 1.0, 0.0,
    -1.0 or blank and no study is listed twice; the split file's ``split`` is one of
    :data:`MIMIC_SPLITS`, no patient is in two splits and every image is listed.

    Args:
        metadata: ``mimic-cxr-2.0.0-metadata.csv.gz`` (or its decompressed ``.csv``).
        labels: CheXpert observations to keep (default: the 5 competition labels).
        uncertainty: what -1.0 becomes: ``ones`` -> 1, ``zeros`` -> 0, ``ignore`` -> NaN,
            ``lsr-ones`` / ``lsr-zeros`` -> a draw per study and label (``lsr_seed``).
        frontal_only: drop the lateral views (``LATERAL``, ``LL``, ``XTABLE LATERAL``).
        split: keep the images of this official split (``-split.csv.gz`` beside
            ``metadata``); ``all`` keeps every image with its official split in ``split``
            (a datamodule then uses it as the source's train / val / test); None keeps every
            image and reads no split file.
        labeler: ``chexpert`` or ``negbio``, the label table to read.
        root: the folder holding ``files/`` (default: the folder of ``metadata``).
        patients: MIMIC-IV's ``patients.csv[.gz]`` for sex and age (default: unknown).
        unlabelled: ``drop`` (counted and logged) or ``error``.
        drop_duplicates: drop later rows of an image listed twice when they repeat the first.
        unknown_sex: read a ``gender`` value outside the list as Unknown instead of failing.
        lsr_seed: the seed of the ``lsr-*`` draws.

    Returns:
        ``path, id`` (the dicom_id), ``patient_id`` (``mimic`` + subject_id), ``study_id``,
        ``sex, age, view``, one float column per label, ``uncertain`` (the labels read as
        -1.0, as bits), ``split`` (official, or blank),
        ``source`` and ``line`` (of the metadata table); ``attrs["labels"]``.

    Raises:
        TableError: a missing column, a bad value, a repeated image or study, a patient in two
            splits (naming the file, line and column).
        FileNotFoundError: a table that is not there.
    """
    metadata = Path(metadata)
    labels = _check_labels(labels, CHEXPERT_LABELS, "MIMIC-CXR (CheXpert)")
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(
            f"uncertainty must be one of {', '.join(UNCERTAINTY_POLICIES)}, got {uncertainty!r}"
        )
    if labeler not in ("chexpert", "negbio"):
        raise ValueError(f"labeler must be 'chexpert' or 'negbio', got {labeler!r}")
    if split is not None and split not in (*MIMIC_SPLITS, "all"):
        raise ValueError(
            f"split must be one of {', '.join(MIMIC_SPLITS)}, 'all' or None, got {split!r}"
        )
    if unlabelled not in ("drop", "error"):
        raise ValueError(f"unlabelled must be 'drop' or 'error', got {unlabelled!r}")
    table = read_table(
        metadata,
        required=["dicom_id", "subject_id", "study_id", "ViewPosition"],
        numeric=("subject_id", "study_id", "StudyDate"),
        text=("dicom_id", "ViewPosition"),
    )
    raw, lines, source = table.frame, table.lines, table.source
    if raw.empty:
        raise TableError(f"{source}: the table has no rows")
    dicom = raw["dicom_id"].str.strip()
    if (dicom == "").any():
        i = int(np.flatnonzero((dicom == "").to_numpy())[0])
        raise TableError(f"{source}: line {lines[i]}, column 'dicom_id': blank")
    subjects, studies = _ids(table, "subject_id"), _ids(table, "study_id")
    keep = check_duplicates(
        raw.assign(dicom_id=dicom), ["dicom_id"], lines, source, "image", drop_duplicates
    )

    label_path = mimic_table(metadata.parent, labeler)
    keys, block, bits = _study_labels(label_path, labels, uncertainty, lsr_seed)
    study_row = pd.MultiIndex.from_frame(keys).get_indexer(
        pd.MultiIndex.from_arrays([subjects, studies])
    )
    if (study_row < 0).any():
        missing = study_row < 0
        i = int(np.flatnonzero(missing)[0])
        if unlabelled == "error":
            raise TableError(
                f"{source}: line {lines[i]}: study {studies[i]} of patient {subjects[i]} has no "
                f"row in {label_path} ({int(missing.sum())} image(s) without labels); set "
                "unlabelled: drop to drop them (counted)"
            )
        log.warning(
            "%s: dropped %d image(s) of %d study(ies) without a row in %s (unlabelled: drop)",
            source,
            int((missing & keep).sum()),
            len(set(studies[missing & keep].tolist())),
            label_path.name,
        )
        keep &= ~missing

    views = raw["ViewPosition"].str.strip().str.upper()
    codes, found = pd.factorize(views)
    groups = [MIMIC_VIEWS.get(v, "Other") for v in found.tolist()]
    other = {
        v: int((codes == k).sum()) for k, v in enumerate(found.tolist()) if v not in MIMIC_VIEWS
    }
    if other:
        log.warning("%s: ViewPosition value(s) read as Other: %s", source, other)
    view = _take(groups, codes, raw["ViewPosition"])

    official = pd.Series("", index=raw.index, dtype=dicom.dtype)
    if split is not None:
        official = _official_split(mimic_table(metadata.parent, "split"), dicom, lines, source)

    if patients is not None:
        years = (
            np.floor(pd.to_numeric(raw["StudyDate"], errors="coerce").to_numpy(dtype=float) / 1e4)
            if "StudyDate" in raw.columns
            else np.full(len(raw), np.nan)
        )
        sex, age = _demographics(Path(patients), subjects, years, unknown_sex)
        sex.index = raw.index
    else:
        sex = pd.Series("Unknown", index=raw.index, dtype=dicom.dtype)
        age = np.full(len(raw), np.nan)

    root = Path(root) if root is not None else metadata.parent
    subject_text = pd.Series(subjects.astype(str), index=raw.index)
    files = os.path.join(str(root), "files", "")
    path = (
        files + "p" + subject_text.str.slice(0, 2) + os.sep + "p" + subject_text + os.sep + "s"
        + pd.Series(studies.astype(str), index=raw.index) + os.sep + dicom + ".jpg"
    )  # fmt: skip
    out = pd.DataFrame(
        {
            "path": path,
            "id": dicom,
            "patient_id": "mimic" + subject_text,
            "study_id": studies,
            "sex": sex,
            "age": age,
            "view": view,
        },
        index=raw.index,
    )
    rows = np.where(study_row >= 0, study_row, 0)
    out = pd.concat([out, pd.DataFrame(block[rows], index=raw.index, columns=labels)], axis=1)
    out["uncertain"] = bits[rows]
    out["split"] = official
    out["source"], out["line"] = source, lines
    if split is not None and split != "all":
        keep &= (official == split).to_numpy()
    if frontal_only:
        keep &= (view != "Lateral").to_numpy()
    out = out[keep]
    if out.empty:
        raise TableError(
            f"{source}: no rows left (split={split!r}, frontal_only={frontal_only}, "
            f"unlabelled={unlabelled!r})"
        )
    out.attrs.update(labels=labels, source=source)
    return out
