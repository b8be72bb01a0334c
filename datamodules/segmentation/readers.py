"""Readers of the segmentation benchmark datasets' real layouts, and of a generic image + mask
table, into the template's rows (one row per image: ``path``, ``masks`` -- per mask channel the list
of files unioned into it -- or ``rle`` with ``shape``, ``valid`` (a
field-of-view file or ``""``), ``id``, ``patient_id``, groups, ``line``, ``source``).

* DRIVE (Staal et al., 2004): ``<part>/images/NN_<part>.tif``, ``<part>/1st_manual/
  NN_manual1.gif`` (vessels), ``<part>/mask/NN_<part>_mask.gif`` (field of view), for the parts
  ``training`` (21-40) and ``test`` (01-20).
* Montgomery County (Jaeger et al., 2014): ``CXR_png/MCUCXR_XXXX_L.png`` (L = 1 tuberculosis),
  ``ManualMask/leftMask/`` and ``rightMask/`` under the same names, ``ClinicalReadings/
  MCUCXR_XXXX_L.txt`` (``Patient's Sex: F``, ``Patient's Age: 045Y``).
* SIIM-ACR pneumothorax: DICOM files ``<ImageId>.dcm`` anywhere under a folder (the challenge
  nests them as ``<study>/<series>/``) and a CSV ``ImageId, EncodedPixels`` of run-length masks
  (:mod:`medxfer.data.rle`); several rows of an image are unioned, ``-1`` is empty; the patient
  is the DICOM Patient ID.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medxfer.data.rle import RLEError, rle_decode
from medxfer.data.tables import TableError, read_table

from ..image_table.readers import read_image_table

__all__ = ["read_drive", "read_mask_table", "read_montgomery", "read_siim"]

log = logging.getLogger(__name__)


def _require(path: Path, what: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} not found")
    return str(path)


def read_mask_table(
    path: str | Path,
    image_column: str = "image",
    mask_columns: Sequence[str] = ("mask",),
    valid_column: str | None = None,
    root: str | Path | None = None,
    patient_column: str | None = None,
    id_column: str | None = None,
    group_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """A CSV / Parquet table of image and mask paths (one mask column per class; a field-of-view
    column optional), relative to ``root`` (default: the table's folder)."""
    path = Path(path)
    extra = [*mask_columns, *([valid_column] if valid_column else []), *group_columns]
    df = read_image_table(path, [image_column], root, patient_column, id_column, None, extra)
    base = Path(root) if root is not None else path.parent
    masks = []
    for k, row in enumerate(df[list(mask_columns)].itertuples(index=False)):
        if any(m == "" for m in row):
            raise TableError(f"{path}, line {df['line'].iloc[k]}: a mask path is blank")
        masks.append([[str(base / m)] for m in row])
    df["masks"] = masks
    df["valid"] = [str(base / v) if v else "" for v in df[valid_column]] if valid_column else ""
    return df


def read_drive(folder: str | Path, manual: Literal["1st", "2nd"] = "1st") -> pd.DataFrame:
    """One part of DRIVE (``training`` or ``test`` folder): each photo with its vessel mask
    (``manual``: the first or second observer) and its field of view; each photo its own
    patient, ids ``drive-<part>-NN``."""
    folder = Path(folder)
    images = sorted((folder / "images").glob("*.tif")) if (folder / "images").is_dir() else []
    if not images:
        raise FileNotFoundError(
            f"no DRIVE images in {folder / 'images'} (expected NN_training.tif / NN_test.tif)"
        )
    rows = []
    for k, image in enumerate(images):
        match = re.fullmatch(r"(\d+)_(training|test)", image.stem)
        if not match:
            raise TableError(f"{image}: not a DRIVE image name (NN_training.tif / NN_test.tif)")
        n, part = match.groups()
        what = f"DRIVE image {image.name}"
        rows.append(
            {
                "path": str(image),
                "masks": [
                    [_require(folder / f"{manual}_manual" / f"{n}_manual{manual[0]}.gif", what)]
                ],
                "valid": _require(folder / "mask" / f"{n}_{part}_mask.gif", what),
                "id": f"drive-{part}-{n}",
                "patient_id": f"drive-{part}-{n}",
                "line": k + 1,
                "source": f"DRIVE folder {folder}",
            }
        )
    return pd.DataFrame(rows)


def _clinical(path: Path) -> tuple[str, float]:
    """Sex and age of a Montgomery ``ClinicalReadings`` file (``unknown`` / NaN when absent)."""
    if not path.is_file():
        return "unknown", float("nan")
    text = path.read_text(errors="replace")
    sex = re.search(r"Sex:\s*([MFO])", text, re.I)
    age = re.search(r"Age:\s*0*(\d+)\s*Y", text, re.I)
    return (sex.group(1).upper() if sex else "unknown"), (float(age.group(1)) if age else np.nan)


def read_montgomery(
    root: str | Path, lungs: Literal["union", "left_right"] = "union"
) -> pd.DataFrame:
    """The Montgomery County set: each radiograph with its lung masks (``union``: one ``lung``
    channel; ``left_right``: two), sex and age from its clinical reading and tuberculosis from
    the name; each image its own patient."""
    root = Path(root)
    images = sorted((root / "CXR_png").glob("MCUCXR_*.png"))
    if not images:
        raise FileNotFoundError(f"no Montgomery images in {root / 'CXR_png'} (MCUCXR_XXXX_L.png)")
    rows = []
    for k, image in enumerate(images):
        what = f"Montgomery image {image.name}"
        left = _require(root / "ManualMask" / "leftMask" / image.name, what)
        right = _require(root / "ManualMask" / "rightMask" / image.name, what)
        sex, age = _clinical(root / "ClinicalReadings" / f"{image.stem}.txt")
        rows.append(
            {
                "path": str(image),
                "masks": [[left, right]] if lungs == "union" else [[left], [right]],
                "valid": "",
                "id": f"montgomery-{image.stem.split('_')[1]}",
                "patient_id": f"montgomery-{image.stem}",
                "sex": sex,
                "age": age,
                "tb": "tb" if image.stem.endswith("_1") else "normal",
                "line": k + 1,
                "source": f"Montgomery folder {root}",
            }
        )
    return pd.DataFrame(rows)


def read_siim(
    csv: str | Path,
    dicom_root: str | Path,
    encoding: Literal["relative", "absolute"],
    unlisted: Literal["error", "negative"] = "error",
    skip_missing: bool = False,
) -> pd.DataFrame:
    """The SIIM-ACR pneumothorax table and its DICOM files.

    Args:
        csv: ``ImageId, EncodedPixels`` (header spaces allowed); rows of one image are unioned.
        dicom_root: folder searched recursively for ``<ImageId>.dcm``.
        encoding: the run-length encoding of the table (``relative``: the challenge's original;
            ``absolute``), never guessed.
        unlisted: a DICOM with no row: an ``error``, or a ``negative`` (empty mask).
        skip_missing: skip the rows whose DICOM is absent (a partial download), counted and
            logged, instead of failing on the first.

    Raises:
        TableError: a missing column, a bad run-length string (file, line, column), an ImageId
            with no DICOM file (unless ``skip_missing``), or (``unlisted="error"``) a DICOM
            with no row.
    """
    import pydicom

    csv, dicom_root = Path(csv), Path(dicom_root)
    if not csv.is_file():
        raise FileNotFoundError(f"SIIM table not found: {csv}")
    table = read_table(csv, skipinitialspace=True)
    raw, table_lines = table.frame, table.lines
    raw.columns = [c.strip() for c in raw.columns]
    for column in ("ImageId", "EncodedPixels"):
        if column not in raw.columns:
            raise TableError(f"{csv}: missing column {column!r}; found {list(raw.columns)}")
    files = {p.stem: p for p in dicom_root.rglob("*.dcm")}
    rles: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    missing: dict[str, int] = {}  # ImageId -> first line, of rows whose DICOM is absent
    skipped = 0
    for k, (image_id, rle) in enumerate(zip(raw["ImageId"], raw["EncodedPixels"], strict=True)):
        image_id = image_id.strip()
        if image_id not in files:
            if not skip_missing:
                raise TableError(
                    f"{csv}, line {table_lines[k]}: no DICOM {image_id}.dcm under {dicom_root}; "
                    "set skip_missing_images: true to skip (and count) the rows whose DICOM is "
                    "absent (a partial download)"
                )
            missing.setdefault(image_id, int(table_lines[k]))
            skipped += 1
            continue
        rles.setdefault(image_id, []).append(rle.strip())
        lines.setdefault(image_id, int(table_lines[k]))
    if missing:
        first = min(missing, key=missing.__getitem__)
        log.warning(
            "%s: skipped %d row(s) of %d (%d image(s)) whose DICOM is absent under %s "
            "(skip_missing_images); first: line %d, %s.dcm",
            csv,
            skipped,
            len(raw),
            len(missing),
            dicom_root,
            missing[first],
            first,
        )
    if missing and not rles:
        raise TableError(
            f"{csv}: none of its {len(missing)} image(s) has its DICOM under {dicom_root}"
        )
    unlisted_ids = sorted(set(files) - set(rles))
    if unlisted_ids and unlisted == "error":
        raise TableError(
            f"{len(unlisted_ids)} DICOM file(s) under {dicom_root} have no row in {csv}, e.g. "
            f"{files[unlisted_ids[0]]}; set unlisted: negative to read them as empty masks"
        )
    rows = []
    for image_id in sorted(rles) + unlisted_ids:
        ds = pydicom.dcmread(files[image_id], stop_before_pixels=True)
        shape = (int(ds.Rows), int(ds.Columns))
        where = f"{csv}, line {lines.get(image_id, '-')}, column 'EncodedPixels'"
        for text in rles.get(image_id, []):
            try:
                rle_decode(text, shape, encoding)  # validated now, decoded again in workers
            except RLEError as err:
                raise TableError(f"{where}: {err}") from None
        rows.append(
            {
                "path": str(files[image_id]),
                "rle": rles.get(image_id, ["-1"]),
                "shape": shape,
                "valid": "",
                "id": f"siim-{len(rows) + 1}",
                "patient_id": str(getattr(ds, "PatientID", image_id)),
                "sex": str(getattr(ds, "PatientSex", "") or "unknown"),
                "line": lines.get(image_id, 0),
                "source": str(csv),
            }
        )
    return pd.DataFrame(rows)
