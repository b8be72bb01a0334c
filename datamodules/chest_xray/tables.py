"""Readers for the chest X-ray metadata tables: CheXpert and NIH ChestX-ray14.

Plain functions, no image IO (DESIGN.md), each returning one validated table with the columns
``path, id, patient_id, sex, age, view`` plus one float column per label (1 positive,
0 negative, NaN unknown: masked in the loss and the metrics), ``source`` and ``line``; tables
with uncertain labels (CheXpert, MIMIC) also ``uncertain``, the labels read as -1.0 as bits.

* CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` with
  ``Path,Sex,Age,Frontal/Lateral,AP/PA`` and 14 observation columns holding 1.0 / 0.0 / -1.0
  (uncertain) / blank (not mentioned). Uncertainty policies of the CheXpert paper: ``ones``
  (U-Ones, used by Mustafa et al. 2021), ``zeros`` (U-Zeros), ``ignore`` (masked), and the
  label smoothing of Pham et al. (2021) that the benchmark of pre-trained ResNet-50s uses,
  ``lsr-ones`` / ``lsr-zeros`` (:data:`LSR_RANGES`). Blank is negative.
* NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017.csv`` or
  ``Data_Entry_2017_v2020.csv``, findings separated by ``|``, whose header has commas inside
  ``OriginalImage[Width,Height]``; optional ``train_val_list.txt`` / ``test_list.txt``. Labels
  may be NIH findings or CheXpert observations (mapped; those NIH lacks are NaN, not negative).

Both readers open their table with :func:`medxfer.data.tables.read_table` (plain or
gzip-compressed, UTF-8, every row with the header's number of fields, the physical line of
each row); errors name the file, line and column. They work on whole columns with pandas, not
on one Python object per row: each reads its table in about 2.5-3.5 times the time of
``pandas.read_csv`` (``benchmarks/table_readers.py``, figures in docs/performance.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
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

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "LSR_RANGES",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "UNCERTAINTY_POLICIES",
    "apply_uncertainty",
    "lsr_draws",
    "read_chexpert_csv",
    "read_nih_csv",
    "read_split_list",
    "uncertain_bits",
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

Uncertainty = Literal["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"]
#: The uncertainty policies.
UNCERTAINTY_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore", "lsr-ones", "lsr-zeros")
#: Label smoothing of uncertain labels (Pham et al., "Interpreting chest X-rays via CNNs that
#: exploit hierarchical disease dependencies and uncertainty labels", 2021): LSR-Ones draws each
#: -1.0 from U(0.55, 0.85), LSR-Zeros from U(0, 0.3).
LSR_RANGES: dict[str, tuple[float, float]] = {"lsr-ones": (0.55, 0.85), "lsr-zeros": (0.0, 0.3)}
_MASK64 = (1 << 64) - 1
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


def _check_labels(labels: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    labels = list(labels)
    unknown = [lab for lab in labels if lab not in known]
    if unknown or not labels:
        raise ValueError(
            f"unknown {what} label(s) {unknown or '(none given)'}; choose from {list(known)}"
        )
    return labels


# --- headers -------------------------------------------------------------------------------


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


# --- columns -------------------------------------------------------------------------------


def _join(root: Path, names: pd.Series) -> pd.Series:
    """``str(root / name)`` of every name, without a ``Path`` per row: the name is appended as
    written (an absolute name replaces ``root``, as with pathlib)."""
    prefix = os.path.join(str(root), "")
    joined = prefix + (names if os.sep == "/" else names.str.replace("/", os.sep, regex=False))
    absolute = names.str.startswith("/") if os.sep == "/" else names.str.match(r"[/\\]|\w:")
    if absolute.any():
        joined[absolute] = [str(root / name) for name in names[absolute]]
    return joined


def _take(values: Sequence[str], codes: np.ndarray, like: pd.Series) -> pd.Series:
    """A text column holding ``values[codes]``, with the dtype and index of ``like``."""
    return pd.Series(pd.array(list(values), dtype=like.dtype).take(codes), index=like.index)


def _chexpert_ids(paths: pd.Series, source: str, lines: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """The image id ``patientN_studyN_<view>`` and the patient id of every CheXpert ``Path``,
    from the first match of ``patient\\d+/study\\d+/[^/.]+`` in it.

    A regex on every path costs about 5 times pandas' parse of the table, so the paths are cut
    per layout: the first path not done yet gives one (the text before its match, the length
    of its patient part); every path with that prefix and a patient part of that length is cut
    with two string slices of the whole column, and the rest of it (``/studyN/<view>.jpg``, a
    few hundred distinct values) matched once per distinct value. A real table has one or two
    layouts; paths in rarer ones (under 1 % of those left) are matched one by one.
    """
    ids = pd.Series("", index=paths.index, dtype=paths.dtype)
    patients = ids.copy()
    todo = np.arange(len(paths))
    while len(todo):
        group = paths if len(todo) == len(paths) else paths.iloc[todo]
        m = _CHEXPERT_PATH.search(group.iloc[0])
        if m is None:
            raise TableError(
                f"{source}: line {lines[todo[0]]}, column Path: {group.iloc[0]!r} is not of the "
                "form <...>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
            )
        k, f = m.start(), m.end(1)
        patient = group.str.slice(k, f)
        codes, rests = pd.factorize(group.str.slice(f))
        p_codes, p_uniques = pd.factorize(patient)
        matches = [_CHEXPERT_REST.match(rest) for rest in rests.tolist()]
        done = (
            group.str.startswith(group.iloc[0][:k]).to_numpy(dtype=bool)
            & np.array([m is not None for m in matches], dtype=bool)[codes]
            & np.asarray(pd.Series(p_uniques).str.fullmatch(r"patient\d+"), dtype=bool)[p_codes]
        )
        rest_ids = ["_" + "_".join(m.groups()) if m else "" for m in matches]
        image_ids = patient + _take(rest_ids, codes, patient)
        if len(group) == len(paths) and done.all():  # every path in one layout: the usual case
            return image_ids, patient
        ids.iloc[todo[done]] = image_ids[done].to_numpy()
        patients.iloc[todo[done]] = patient[done].to_numpy()
        todo = todo[~done]
        if 0 < len(todo) and done.sum() < max(1, len(group) // 100):  # rare: one by one
            break
    for i in todo:  # rare layouts: the reference definition, one path at a time
        m = _CHEXPERT_PATH.search(paths.iloc[i])
        if m is None:
            raise TableError(
                f"{source}: line {lines[i]}, column Path: {paths.iloc[i]!r} is not of the form "
                "<...>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
            )
        ids.iloc[i], patients.iloc[i] = "_".join(m.groups()), m.group(1)
    return ids, patients


def _codes(
    text: pd.Series, table: Mapping[str, str], source: str, lines: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The code of each row's value and what each code stands for: the (stripped) value through
    ``table``; a value not in it is an error naming the line and column. Works on the distinct
    values (a few per table)."""
    codes, uniques = pd.factorize(text)
    new = []
    for code, value in enumerate(uniques.tolist()):
        new.append(table.get(value.strip()))
        if new[-1] is None:
            i = int(np.flatnonzero(codes == code)[0])
            allowed = ", ".join(repr(v) for v in table if v)
            raise TableError(
                f"{source}: line {lines[i]}, column {text.name!r}: value {value!r} is not one "
                f"of {allowed}" + (" or blank" if "" in table else "")
            )
    return codes, new


def _numeric(col: pd.Series, source: str, lines: np.ndarray, name: str) -> pd.Series:
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
            f"{source}: line {lines[i]}, column {name!r}: {col.iloc[i]!r} is not a number"
        )
    return values.astype(float)


def _chexpert_values(table: Table, labels: Sequence[str], path: Path) -> dict[str, np.ndarray]:
    """CheXpert label columns as floats: 1, 0, -1, NaN for blank. Any other value (a number,
    or text that is not one) is an error naming the line and column, and the value as written
    (the column is read again as text for the message)."""
    values = {}
    for lab in labels:
        col = table.frame[lab]
        if col.dtype.kind in "iuf":
            v = col.to_numpy(dtype=float)
            blank = np.isnan(v)
        else:  # some value is not a number: pandas left the column as text
            text = col.fillna("").astype(str).str.strip()
            v = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
            blank = (text == "").to_numpy()
        bad = ~(np.isin(v, (1.0, 0.0, -1.0)) | blank)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            written = read_table(path, numeric=(), text=[lab]).frame[lab].iloc[i].strip()
            raise TableError(
                f"{path}: line {table.lines[i]}, column {lab!r}: value {written!r} is not one "
                "of 1.0, 0.0, -1.0 or blank"
            )
        values[lab] = v
    return values


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic): a well-mixed hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def lsr_draws(keys: pd.Series, labels: Sequence[str], seed: int) -> np.ndarray:
    """Uniform draws in [0, 1), ``(rows, len(labels))``, each a function of ``(seed, the row's
    key, the label's name)`` alone: the same for a row whatever the table's order, the labels
    asked for or where a run was resumed, and different for another seed.

    Why by hand: a generator seeded per row (``numpy.random.SeedSequence``) costs ~10 us a row
    (2 s for CheXpert's 223k); pandas' stable 64-bit hash of the keys mixed with SplitMix64 is
    vectorised."""
    with np.errstate(over="ignore"):
        rows = pd.util.hash_pandas_object(keys.reset_index(drop=True), index=False).to_numpy(
            dtype=np.uint64
        )
        base = _splitmix64(rows ^ _splitmix64(np.array([seed & _MASK64], dtype=np.uint64)))
        out = np.empty((len(keys), len(labels)))
        for j, label in enumerate(labels):
            name = int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "little")
            mixed = _splitmix64(base ^ np.uint64(name))
            out[:, j] = (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def uncertain_bits(values: Mapping[str, np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Which of ``labels`` each row holds as uncertain (-1.0), as bit ``j`` of an int64 for
    ``labels[j]``: what a reader writes in its ``uncertain`` column, so that the same rows can be
    read under another uncertainty policy without parsing the file again
    (:func:`apply_uncertainty`)."""
    bits = np.zeros(len(next(iter(values.values()))) if values else 0, dtype=np.int64)
    for j, lab in enumerate(labels):
        bits |= (np.asarray(values[lab]) == -1.0).astype(np.int64) << j
    return bits


def apply_uncertainty(df: pd.DataFrame, labels: Sequence[str], uncertainty: str) -> pd.DataFrame:
    """``df`` (a reader's table with its ``uncertain`` column) with its uncertain labels set by
    the policy ``ones`` (1), ``zeros`` (0) or ``ignore`` (NaN): the table read again under that
    policy."""
    if uncertainty not in ("ones", "zeros", "ignore"):
        raise ValueError(f"uncertainty must be 'ones', 'zeros' or 'ignore', got {uncertainty!r}")
    out = df.copy()
    bits = out["uncertain"].to_numpy(dtype=np.int64)
    value = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertainty]
    for j, lab in enumerate(labels):
        hit = ((bits >> j) & 1).astype(bool)
        if hit.any():
            column = out[lab].to_numpy(dtype=float, copy=True)
            column[hit] = value
            out[lab] = column
    return out


def _label_block(
    values: Mapping[str, np.ndarray],
    labels: Sequence[str],
    uncertainty: Uncertainty,
    keys: pd.Series | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The chosen CheXpert labels under an uncertainty policy, ``(rows, len(labels))``: blank
    -> 0 (not mentioned), -1 -> 1 (``ones``), 0 (``zeros``), NaN (``ignore``) or a draw from
    :data:`LSR_RANGES` (``lsr-ones`` / ``lsr-zeros``, by :func:`lsr_draws` of ``keys`` and
    ``seed``). ``np.fmax(x, 0)`` is 0 for NaN (blank)."""
    chosen = np.array([values[lab] for lab in labels], dtype=float)
    if uncertainty == "ones":
        return np.fmax(np.abs(chosen), 0.0).T
    if uncertainty == "zeros":
        return np.fmax(chosen, 0.0).T
    if uncertainty in LSR_RANGES:
        if keys is None:
            raise ValueError(f"uncertainty {uncertainty!r} needs the rows' keys")
        lo, hi = LSR_RANGES[uncertainty]
        draws = lo + (hi - lo) * lsr_draws(keys, labels, seed)
        return np.where(chosen.T == -1.0, draws, np.fmax(chosen, 0.0).T)
    return np.where(chosen == -1.0, np.nan, np.fmax(chosen, 0.0)).T


# --- readers -------------------------------------------------------------------------------


def read_chexpert_csv(
    path: str | os.PathLike[str],
    labels: Sequence[str] = COMPETITION_LABELS,
    uncertainty: Uncertainty = "ones",
    frontal_only: bool = False,
    root: str | os.PathLike[str] | None = None,
    drop_duplicates: bool = False,
    unknown_sex: bool = False,
    lsr_seed: int = 0,
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
        uncertainty: what -1.0 becomes: ``ones`` -> 1, ``zeros`` -> 0, ``ignore`` -> NaN,
            ``lsr-ones`` -> U(0.55, 0.85), ``lsr-zeros`` -> U(0, 0.3) (label smoothing, drawn
            per image and label from ``lsr_seed``: the same on every read).
        frontal_only: keep frontal images only.
        root: the folder that holds ``CheXpert-v1.0.../`` (``Path`` is relative to it);
            default: the CSV's grandparent.
        drop_duplicates: drop later rows of an image listed twice when they repeat the first
            (counted and logged) instead of failing.
        unknown_sex: read a ``Sex`` value outside the list as Unknown (counted and logged)
            instead of failing.
        lsr_seed: the seed of the ``lsr-*`` draws.

    Returns:
        The validated table (see the module docstring); ``attrs["labels"]`` holds ``labels``.

    Raises:
        TableError: a missing column, a row with too few or too many fields, a value outside
            the above, or an image listed twice (naming the file, line and column).
    """
    path = Path(path)
    labels = _check_labels(labels, CHEXPERT_LABELS, "CheXpert")
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(
            f"uncertainty must be one of {', '.join(UNCERTAINTY_POLICIES)}, got {uncertainty!r}"
        )
    table = read_table(
        path,
        required=[*_CHEXPERT_META, *labels],
        numeric=("Age", *CHEXPERT_LABELS),
        text=[c for c in _CHEXPERT_META if c != "Age"],
    )
    raw, lines, source = table.frame, table.lines, table.source
    present = [lab for lab in CHEXPERT_LABELS if lab in raw.columns]
    values = _chexpert_values(table, present, path)  # every label, requested or not
    root = Path(root) if root is not None else path.resolve().parent.parent
    ids, patients = _chexpert_ids(raw["Path"], source, lines)
    age = _numeric(raw["Age"], source, lines, "Age")
    check_age(age, lambda i: f"{source}: line {lines[i]}, column 'Age'")
    codes, kinds = _codes(raw["Frontal/Lateral"], _CHEXPERT_FRONTAL_LATERAL, source, lines)
    lateral = (np.array(kinds) == "Lateral")[codes]
    codes, views = _codes(raw["AP/PA"], _CHEXPERT_VIEW, source, lines)
    sex = normalise_sex(
        raw["Sex"], lambda i: f"{source}: line {lines[i]}, column 'Sex'", unknown_sex
    )
    out = pd.DataFrame(
        {
            "path": _join(root, raw["Path"]),
            "id": ids,
            "patient_id": patients,
            "sex": sex,
            "age": age.where(age != 0),  # 0: unknown in the real file
            "view": _take([*views, "Lateral"], np.where(lateral, len(views), codes), raw["AP/PA"]),
        },
        index=raw.index,
    )
    out = pd.concat(
        [
            out,
            pd.DataFrame(
                _label_block(values, labels, uncertainty, ids, lsr_seed),
                index=raw.index,
                columns=labels,
            ),
        ],
        axis=1,
    )
    out["uncertain"] = uncertain_bits(values, labels)
    out["source"], out["line"] = source, lines
    if not ids.is_unique:
        keep = check_duplicates(raw.assign(id=ids), ["id"], lines, source, "image", drop_duplicates)
        out, lateral = out[keep], lateral[keep]
    if frontal_only:
        out = out[~lateral]
        if out.empty:
            raise TableError(
                f"{path}: no rows left after frontal_only=True (every image is lateral)"
            )
    out.attrs.update(labels=labels, source=source)
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

    table = read_table(
        path,
        required=needed,
        numeric=("Patient Age", "Patient ID"),  # the real IDs are integers: text only if not
        text=("Image Index", "Finding Labels", *_NIH_SEX_COLUMNS, "View Position"),
        split_header=_split_nih_header,
        trailing_empty=True,
    )
    raw, lines, source = table.frame, table.lines, table.source
    image_dir = Path(image_dir) if image_dir is not None else path.parent / "images"

    def where(column: str) -> Callable[[int], str]:
        return lambda i: f"{source}: line {lines[i]}, column {column!r}"

    def check_not_blank(column: str, values: pd.Series) -> None:
        if (values == "").any():
            raise TableError(f"{where(column)(int(np.flatnonzero(values == '')[0]))}: blank")

    images = raw["Image Index"].str.strip()
    check_not_blank("Image Index", images)
    ids = raw["Patient ID"]
    if ids.dtype.kind in "iu":  # the real file: integers, so none is blank
        patients = "nih" + ids.astype(images.dtype)
    else:
        patients = ids.astype(images.dtype).str.strip().where(ids.notna(), "")  # blank: NaN
        check_not_blank("Patient ID", patients)
        patients = "nih" + patients
    # the findings of each distinct Finding Labels value (a few hundred in the real file)
    codes, uniques = pd.factorize(raw["Finding Labels"])
    uniques = [str(u) for u in uniques.tolist()]
    column = {f: j for j, f in enumerate(NIH_FINDINGS)}
    pairs = np.array(
        [(u, column.get(f, -1)) for u, v in enumerate(uniques) for f in v.strip().split("|")],
        dtype=np.intp,
    ).reshape(-1, 2)
    if (pairs[:, 1] < 0).any():
        i = int(np.flatnonzero(np.isin(codes, pairs[pairs[:, 1] < 0, 0]))[0])
        unknown = [f for f in uniques[codes[i]].strip().split("|") if f not in column]
        raise TableError(
            f"{source}: line {lines[i]}, column 'Finding Labels': unknown finding(s) {unknown}; "
            f"expected names from {list(NIH_FINDINGS)}"
        )
    member = np.zeros((len(uniques), len(NIH_FINDINGS)), dtype=bool)  # distinct value x finding
    member[pairs[:, 0], pairs[:, 1]] = True
    findings = {}
    for lab in labels:  # a label asked for twice is one column
        sources = [lab] if lab in column else [f for f, c in NIH_TO_CHEXPERT.items() if c == lab]
        if sources:
            findings[lab] = member[:, [column[f] for f in sources]].any(axis=1).astype(float)[codes]
        else:  # a CheXpert observation NIH has no finding for: unknown
            findings[lab] = np.full(len(raw), np.nan)
    age = _numeric(raw["Patient Age"], source, lines, "Patient Age")
    check_age(age, where("Patient Age"))
    sex = raw[sex_column(raw.columns)]
    sex = normalise_sex(sex, where(str(sex.name)), unknown_sex)
    codes, views = _codes(raw["View Position"], _NIH_VIEW, source, lines)
    out = pd.DataFrame(
        {
            "path": _join(image_dir, images),
            "id": images.str.removesuffix(".png"),
            "patient_id": patients,
            "sex": sex,
            "age": age,
            "view": _take(views, codes, raw["View Position"]),
            **findings,
        },
        index=raw.index,
    )
    out["source"], out["line"] = source, lines
    if not images.is_unique:
        keep = check_duplicates(
            raw.assign(id=images), ["id"], lines, source, "image", drop_duplicates
        )
        out, images = out[keep], images[keep]
    if split_list is not None:
        keep = read_split_list(split_list)
        out = out[images.isin(keep).to_numpy()]
        if out.empty:
            raise TableError(f"{path}: no rows left after filtering by split list {split_list}")
    out.attrs.update(labels=labels, source=source)
    return out
