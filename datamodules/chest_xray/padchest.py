"""Reader for PadChest (Bustos et al., Medical Image Analysis 2020): 160,861 chest X-rays of
the Hospital San Juan, Alicante, labelled with terms of a hierarchical taxonomy.

The table, ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``, has an unnamed
leading index column and 35 named ones (``ImageID, ImageDir, StudyDate_DICOM, StudyID,
PatientID, PatientBirth, PatientSex_DICOM, ViewPosition_DICOM, Projection, MethodProjection,
..., BitsStored_DICOM, ..., ReportID, Report, MethodLabel, Labels, Localizations,
LabelsLocalizationsBySentence, labelCUIS, LocalizationsCUIS``). Its ``labelCUIS`` and
``LocalizationsCUIS`` cells wrap across physical lines (166,738 lines for 160,861 rows), so
every row's line comes from :func:`medxfer.data.tables.read_table`'s exact count.

``Labels`` holds a Python list literal of taxonomy terms (``['pleural effusion', '
cardiomegaly']``): read with :func:`ast.literal_eval`, never ``eval``; items lose their
leading and trailing spaces and empty items go. About 100 rows hold the text ``nan`` instead
of a list: they have no labels and are dropped (counted). The items ``exclude`` and
``suboptimal study`` mark images the annotators set aside; they are dropped only when asked
(``drop_excluded``, ``drop_suboptimal``), counted either way.

Terms map onto label names through :data:`PADCHEST_TERMS` (label -> the terms that make it
positive), matched **exactly** after stripping, never by substring (``"pleural effusion"`` is
not ``"loculated pleural effusion"`` unless the map says so). A requested label is 1 when one of
its terms is in the row's list and 0 otherwise: PadChest reports list every finding, and a
``normal`` study lists ``normal`` alone. A requested label with no terms in the map is unknown
(NaN) on every row, as for NIH. Terms of the kept rows that map to no requested label are
counted and listed in the log, never silently dropped.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medxfer.data.tables import TableError, check_age, check_duplicates, normalise_sex, read_table

from .tables import _codes, _numeric, _take

__all__ = [
    "PADCHEST_MARKERS",
    "PADCHEST_PROJECTIONS",
    "PADCHEST_TERMS",
    "read_padchest_csv",
]

log = logging.getLogger(__name__)

#: Label name (CheXpert observations and NIH findings) -> the PadChest terms that make it
#: positive, matched exactly after stripping. Terms from the PadChest taxonomy (Bustos et al.
#: 2020, supplementary tree); labels it has no counterpart for (Lung Opacity, Enlarged
#: Cardiomediastinum) are not listed and read as unknown.
PADCHEST_TERMS: dict[str, tuple[str, ...]] = {
    "No Finding": ("normal",),
    "Atelectasis": (
        "atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
        "round atelectasis", "total atelectasis",
    ),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",),
    "Edema": ("pulmonary edema",),
    "Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion"),
    "Pleural Effusion": (
        "pleural effusion", "loculated pleural effusion", "loculated fissural effusion",
    ),
    "Pneumonia": ("pneumonia", "atypical pneumonia"),
    "Pneumothorax": ("pneumothorax",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis",),
    "Hernia": ("hiatal hernia",),
    "Infiltration": ("infiltrates",),
    "Mass": ("mass", "pulmonary mass"),
    "Nodule": ("nodule", "multiple nodules"),
    "Lung Lesion": ("mass", "pulmonary mass", "nodule", "multiple nodules"),
    "Pleural_Thickening": (
        "pleural thickening", "apical pleural thickening", "calcified pleural thickening",
    ),
    "Pleural Other": (
        "pleural thickening", "apical pleural thickening", "calcified pleural thickening",
    ),
    "Fracture": (
        "fracture", "rib fracture", "clavicle fracture", "humeral fracture", "vertebral fracture",
    ),
    "Support Devices": (
        "pacemaker", "electrical device", "dual chamber device", "single chamber device",
        "NSG tube", "endotracheal tube", "tracheostomy tube", "chest drain tube", "catheter",
        "central venous catheter", "central venous catheter via jugular vein",
        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
    ),
}  # fmt: skip
#: The items that mark an image set aside rather than a finding.
PADCHEST_MARKERS: tuple[str, ...] = ("exclude", "suboptimal study")
#: ``Projection`` -> view group: ``AP_horizontal`` (supine, bedside) is its own group, ``L``
#: the lateral one ``frontal_only`` drops, ``COSTAL`` (rib views) ``Other``.
PADCHEST_PROJECTIONS: dict[str, str] = {
    "PA": "PA", "AP": "AP", "AP_horizontal": "AP Supine", "L": "Lateral", "COSTAL": "Other",
    "EXCLUDE": "Exclude", "UNK": "Unknown", "": "Unknown",
}  # fmt: skip
#: ``PatientSex_DICOM``: ``O`` (other) reads as Unknown.
_PADCHEST_SEX = {"O": "Unknown"}
_META = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "Projection", "MethodLabel", "Labels",
)  # fmt: skip


def _terms(
    cells: pd.Series, source: str, lines: np.ndarray
) -> tuple[np.ndarray, list[tuple[str, ...] | None]]:
    """Each row's code and, per code, its terms (stripped, empties dropped), or None for a row
    without labels (``nan`` or blank). Parsed once per distinct cell with
    :func:`ast.literal_eval`: a cell that is not a list of strings is an error naming the line."""
    codes, uniques = pd.factorize(cells)
    parsed: list[tuple[str, ...] | None] = []
    for code, cell in enumerate(uniques.tolist()):
        text = str(cell).strip()
        if text in ("", "nan", "None"):
            parsed.append(None)
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            i = int(np.flatnonzero(codes == code)[0])
            raise TableError(
                f"{source}: line {lines[i]}, column 'Labels': {text[:80]!r} is not a list of "
                "label terms such as ['pleural effusion', 'cardiomegaly']"
            )
        items = tuple(dict.fromkeys(t.strip() for t in value if t.strip()))
        parsed.append(items or None)
    return codes, parsed


def read_padchest_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    ),
    image_dir: str | os.PathLike[str] | None = None,
    layout: Literal["folders", "flat"] = "folders",
    frontal_only: bool = False,
    projections: Sequence[str] | None = None,
    method: Literal["Physician", "RNN_model"] | None = None,
    drop_excluded: bool = False,
    drop_suboptimal: bool = False,
    terms: Mapping[str, Sequence[str]] | None = None,
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
) -> pd.DataFrame:
    """Read the PadChest table (plain or gzip-compressed): one row per image.

    Checked on every row: ``ImageID`` not blank and no image listed twice; ``Labels`` a list
    literal of strings (or ``nan``); ``Projection`` one of :data:`PADCHEST_PROJECTIONS`;
    ``PatientSex_DICOM`` M / F / O (or another spelling of :data:`SEX_VALUES`); ``PatientBirth``
    a (float) year and ``StudyDate_DICOM`` a ``YYYYMMDD`` date, giving an age in [0, 120];
    ``ImageDir`` a folder number when ``layout`` is ``folders``.

    Args:
        path: the CSV.
        labels: label names, each a key of the term map.
        image_dir: the folder holding the images (default: the CSV's folder).
        layout: ``folders`` (``<image_dir>/<ImageDir>/<ImageID>``, the release's zips extracted
            each into its number) or ``flat`` (``<image_dir>/<ImageID>``).
        frontal_only: drop the lateral projection (``L``).
        projections: keep only these ``Projection`` values (e.g. the scale study's ``PA, AP,
            AP_horizontal, L, COSTAL``), counted in the log.
        method: keep the rows labelled by ``Physician`` or by the ``RNN_model`` only.
        drop_excluded: drop the rows whose labels hold ``exclude`` (counted).
        drop_suboptimal: drop the rows whose labels hold ``suboptimal study`` (counted).
        terms: label -> PadChest terms, replacing :data:`PADCHEST_TERMS` for those labels.
        drop_duplicates: drop later rows of an image listed twice when they repeat the first.
        unknown_sex: read a sex value outside the list as Unknown instead of failing.

    Returns:
        ``path, id, patient_id, sex, age, view``, one float column per label, ``bits`` (the
        DICOM's ``BitsStored`` where the table has it), ``source`` and ``line``. A ``path``
        ends in ``#<bits>`` where the bits are known: what the grey reader
        (:func:`medxfer.data.images.read_grey_image`) scales the 16-bit PNG by.

    Raises:
        TableError: a missing column, a bad value, a repeated image (naming the file, line and
            column), or no row left after the filters.
    """
    path = Path(path)
    term_map = {**PADCHEST_TERMS, **{k: tuple(v) for k, v in (terms or {}).items()}}
    labels = list(dict.fromkeys(labels))
    unknown = [lab for lab in labels if lab not in term_map]
    if unknown or not labels:
        raise ValueError(
            f"unknown PadChest label(s) {unknown or '(none given)'}; choose from "
            f"{sorted(term_map)} or give their terms in `terms`"
        )
    table = read_table(
        path,
        required=_META,
        numeric=("StudyDate_DICOM", "PatientBirth", "BitsStored_DICOM"),
        text=(
            "ImageID",
            "ImageDir",
            "PatientID",
            "PatientSex_DICOM",
            "Projection",
            "MethodLabel",
            "Labels",
        ),
    )
    raw, lines, source = table.frame, table.lines, table.source
    if raw.empty:
        raise TableError(f"{source}: the table has no rows")

    def where(column: str) -> Callable[[int], str]:
        return lambda i: f"{source}: line {lines[i]}, column {column!r}"

    images = raw["ImageID"].str.strip()
    if (images == "").any():
        raise TableError(
            f"{where('ImageID')(int(np.flatnonzero((images == '').to_numpy())[0]))}: blank"
        )
    patients = raw["PatientID"].str.strip()
    if (patients == "").any():
        i = int(np.flatnonzero((patients == "").to_numpy())[0])
        raise TableError(f"{where('PatientID')(i)}: blank")
    keep = np.ones(len(raw), dtype=bool)
    if not images.is_unique:
        keep &= check_duplicates(
            raw.assign(id=images), ["id"], lines, source, "image", drop_duplicates
        )

    # labels: one parse per distinct cell
    codes, parsed = _terms(raw["Labels"], source, lines)
    unlabelled = np.array([p is None for p in parsed], dtype=bool)[codes]
    counts = {"no labels (nan or empty)": int((unlabelled & keep).sum())}
    keep &= ~unlabelled
    for marker, drop in (("exclude", drop_excluded), ("suboptimal study", drop_suboptimal)):
        marked = np.array([p is not None and marker in p for p in parsed], dtype=bool)[codes]
        if drop:
            counts[f"'{marker}' (dropped as asked)"] = int((marked & keep).sum())
            keep &= ~marked
        elif (marked & keep).any():
            log.info("%s: %d image(s) marked '%s' kept", source, int((marked & keep).sum()), marker)
    if method is not None:
        methods = raw["MethodLabel"].str.strip()
        bad = ~methods.isin(["Physician", "RNN_model"]).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TableError(
                f"{where('MethodLabel')(i)}: {methods.iloc[i]!r} is not Physician or RNN_model"
            )
        counts[f"MethodLabel not {method}"] = int((keep & (methods != method).to_numpy()).sum())
        keep &= (methods == method).to_numpy()

    p_codes, groups = _codes(raw["Projection"], PADCHEST_PROJECTIONS, source, lines)
    projection = raw["Projection"].str.strip()
    if projections is not None:
        unknown_p = sorted(set(projections) - set(PADCHEST_PROJECTIONS))
        if unknown_p:
            raise ValueError(
                f"unknown Projection value(s) {unknown_p}; choose from {list(PADCHEST_PROJECTIONS)}"
            )
        chosen = projection.isin(list(projections)).to_numpy()
        counts[f"Projection not in {list(projections)}"] = int((keep & ~chosen).sum())
        keep &= chosen
    view = _take(groups, p_codes, raw["Projection"])
    if frontal_only:
        counts["lateral (frontal_only)"] = int((keep & (view == "Lateral").to_numpy()).sum())
        keep &= (view != "Lateral").to_numpy()

    sex_text = raw["PatientSex_DICOM"].str.strip().replace(_PADCHEST_SEX)
    sex = normalise_sex(sex_text, where("PatientSex_DICOM"), unknown_sex)
    birth = _numeric(raw["PatientBirth"], source, lines, "PatientBirth")
    date = _numeric(raw["StudyDate_DICOM"], source, lines, "StudyDate_DICOM")
    age = np.floor(date.to_numpy() / 1e4) - birth.to_numpy()
    check_age(age, where("PatientBirth"))

    root = Path(image_dir) if image_dir is not None else path.parent
    if layout == "folders":
        folder = pd.to_numeric(raw["ImageDir"].str.strip(), errors="coerce")
        bad = (folder.isna() | (folder != folder.round()) | (folder < 0)).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TableError(
                f"{where('ImageDir')(i)}: {raw['ImageDir'].iloc[i]!r} is not a folder number "
                "(or read the images with layout: flat)"
            )
        prefix = os.path.join(str(root), "") + folder.astype("int64").astype(str) + os.sep
        paths = prefix.astype(images.dtype) + images
    elif layout == "flat":
        paths = os.path.join(str(root), "") + images
    else:
        raise ValueError(f"layout must be 'folders' or 'flat', got {layout!r}")

    # label columns: a term set per distinct cell, exact membership
    columns = {}
    for lab in labels:
        wanted = set(term_map[lab])
        if not wanted:
            columns[lab] = np.full(len(raw), np.nan)
            continue
        hit = np.array([p is not None and not wanted.isdisjoint(p) for p in parsed], dtype=float)
        columns[lab] = hit[codes]
    known = set().union(*(term_map[lab] for lab in labels), PADCHEST_MARKERS)
    images_per_code = np.bincount(codes[keep], minlength=len(parsed))
    unmapped: dict[str, int] = {}
    for code in np.flatnonzero(images_per_code):
        for term in parsed[code] or ():
            if term not in known:
                unmapped[term] = unmapped.get(term, 0) + int(images_per_code[code])
    if unmapped:
        listed = ", ".join(f"{t!r}: {n}" for t, n in sorted(unmapped.items(), key=lambda x: -x[1]))
        log.info(
            "%s: %d term(s) map to no requested label (images that hold them): %s",
            source,
            len(unmapped),
            listed,
        )
    dropped = {k: v for k, v in counts.items() if v}
    if dropped:
        log.warning(
            "%s: dropped %s", source, ", ".join(f"{v} image(s): {k}" for k, v in dropped.items())
        )

    out = pd.DataFrame(
        {
            "path": paths,
            "id": images,
            "patient_id": "padchest" + patients,
            "sex": sex,
            "age": age,
            "view": view,
            **columns,
        },
        index=raw.index,
    )
    bits = (
        pd.to_numeric(raw["BitsStored_DICOM"], errors="coerce")
        if "BitsStored_DICOM" in raw.columns
        else pd.Series(np.nan, index=raw.index)
    )
    known = bits.between(1, 16).to_numpy()
    out.loc[known, "path"] = out.loc[known, "path"] + "#" + bits[known].astype(int).astype(str)
    out["bits"] = bits
    out["source"], out["line"] = source, lines
    out = out[keep]
    if out.empty:
        raise TableError(f"{source}: no rows left after the filters ({dropped})")
    out.attrs.update(labels=labels, source=source, unmapped_terms=unmapped)
    return out
