"""Reader for the two public tuberculosis chest X-ray sets of the U.S. National Library of
Medicine (Jaeger et al., Quant. Imaging Med. Surg. 2014):

* Montgomery County (``MontgomerySet/``): 138 PNGs ``CXR_png/MCUCXR_0001_0.png``, 58 with
  tuberculosis, and ``ClinicalReadings/MCUCXR_0001_0.txt`` (``Patient's Sex: F``, ``Patient's
  Age: 040Y``, then the reading);
* Shenzhen (``ChinaSet_AllFiles/``): 662 PNGs ``CXR_png/CHNCXR_0001_0.png``, 336 with
  tuberculosis, and ``ClinicalReadings/CHNCXR_0001_0.txt`` whose first line holds sex and age in
  free text (``male 35yrs``, ``Female, 23``, ``11 months  male``, ...).

The last digit of the name is the label: 1 tuberculosis, 0 normal. There is no table: the image
folder is the list of images, each a patient of its own. Sex and age are read from the clinical
reading where it states them; what a reading does not state (or a missing reading) is Unknown
sex / unknown age, counted and logged -- never an error, since the Shenzhen readings are
irregular by nature. The messages of this reader name the image or reading file (``line`` is
1, the file's first line, for the dataset's messages).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medxfer.data.tables import MAX_AGE, TableError

__all__ = ["TB_LABEL", "parse_reading", "read_tuberculosis"]

log = logging.getLogger(__name__)

#: The label column of the tuberculosis sets.
TB_LABEL = "Tuberculosis"
#: ``MCUCXR_0001_0`` / ``CHNCXR_0001_0``: collection, number, label.
_NAME = re.compile(r"(MCUCXR|CHNCXR)_(\d+)_([01])")
_SEX = re.compile(r"\b(female|male|f|m)\b", re.IGNORECASE)
#: An age with its unit (``35yrs``, ``35 yr``, ``040Y``, ``11 months``, ``8 days``), or a bare
#: number (Shenzhen's ``Female, 23``).
_AGE = re.compile(
    r"(\d+(?:\.\d+)?)\s*(years?|yrs?|y|months?|mons?|m(?![a-z])|days?|d(?![a-z]))?",
    re.IGNORECASE,
)
_UNIT_YEARS = {"y": 1.0, "m": 1 / 12, "d": 1 / 365.25}


def parse_reading(text: str) -> tuple[str, float]:
    """Sex (``Female`` / ``Male`` / ``Unknown``) and age in years (NaN when not stated) from a
    clinical reading: Montgomery's ``Patient's Sex:`` / ``Patient's Age:`` lines, else the
    first line that names a sex or an age (Shenzhen). An age outside [0, 120] is unknown.

    Example:
        >>> parse_reading("Patient's Sex: F\\nPatient's Age: 040Y\\nnormal")
        ('Female', 40.0)
        >>> parse_reading("male 1yrs\\nbilateral PTB")
        ('Male', 1.0)
        >>> parse_reading("11 months female\\nnormal")
        ('Female', 0.9166666666666666)
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    sex_text = next(
        (ln.split(":", 1)[1] for ln in lines if ln.lower().startswith("patient's sex")), None
    )
    age_text = next(
        (ln.split(":", 1)[1] for ln in lines if ln.lower().startswith("patient's age")), None
    )
    if sex_text is None and age_text is None and lines:  # Shenzhen: the first line, free text
        sex_text = age_text = lines[0]
    sex = "Unknown"
    if sex_text is not None and (m := _SEX.search(sex_text)):
        sex = "Female" if m.group(1).lower().startswith("f") else "Male"
    age = np.nan
    if age_text is not None:
        for m in _AGE.finditer(_SEX.sub(" ", age_text)):
            unit = (m.group(2) or "y")[0].lower()
            value = float(m.group(1)) * _UNIT_YEARS[unit]
            age = value if 0 <= value <= MAX_AGE else np.nan
            break
    return sex, age


def read_tuberculosis(
    root: str | os.PathLike[str],
    labels: Sequence[str] = (TB_LABEL,),
    image_folder: str = "CXR_png",
    readings_folder: str = "ClinicalReadings",
) -> pd.DataFrame:
    """Read the Montgomery or Shenzhen set from its folder.

    Args:
        root: ``MontgomerySet/`` or ``ChinaSet_AllFiles/`` (or any folder of that layout).
        labels: ``["Tuberculosis"]``, the one label of these sets.
        image_folder: the PNGs, inside ``root``.
        readings_folder: the clinical readings, inside ``root`` (optional: without it, sex
            and age are unknown).

    Returns:
        ``path, id`` (the file stem), ``patient_id`` (``tb`` + the stem), ``sex``, ``age``,
        ``view`` (PA), ``Tuberculosis`` (1 / 0), ``collection`` (``MCUCXR`` / ``CHNCXR``),
        ``source`` (the image file) and ``line`` (1); ``attrs["labels"]``.

    Raises:
        FileNotFoundError: no image folder.
        TableError: a PNG whose name is not ``<MCUCXR|CHNCXR>_<number>_<0|1>.png`` (naming
            it), or a folder without images.
    """
    if list(labels) != [TB_LABEL]:
        raise ValueError(f"the tuberculosis sets have one label, {TB_LABEL!r}; got {list(labels)}")
    root = Path(root)
    images = root / image_folder
    if not images.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {images} (the set's CXR_png/; give image_folder for another name)"
        )
    files = sorted(p for p in images.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise TableError(f"{images}: no PNG images")
    rows, unstated = [], {"no reading": 0, "sex": 0, "age": 0}
    readings = root / readings_folder
    for path in files:
        m = _NAME.fullmatch(path.stem)
        if m is None:
            raise TableError(
                f"{path}: the name is not <MCUCXR|CHNCXR>_<number>_<0|1>.png, so its label is "
                "unknown; move other files out of the image folder"
            )
        reading = readings / f"{path.stem}.txt"
        if reading.is_file():
            sex, age = parse_reading(reading.read_text(encoding="utf-8", errors="replace"))
        else:
            sex, age = "Unknown", np.nan
            unstated["no reading"] += 1
        unstated["sex"] += sex == "Unknown"
        unstated["age"] += bool(np.isnan(age))
        rows.append((str(path), path.stem, sex, age, float(m.group(3)), m.group(1)))
    if any(unstated.values()):
        log.info(
            "%s: %d image(s) without a clinical reading; sex unknown for %d, age for %d",
            root,
            unstated["no reading"],
            unstated["sex"],
            unstated["age"],
        )
    frame = pd.DataFrame(rows, columns=["path", "id", "sex", "age", TB_LABEL, "collection"])
    frame.insert(2, "patient_id", "tb" + frame["id"])
    frame.insert(5, "view", "PA")
    frame["source"], frame["line"] = frame["path"], 1
    frame.attrs.update(labels=[TB_LABEL], source=str(root))
    return frame
