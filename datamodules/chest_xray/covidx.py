"""Reader for COVIDx CXR (Wang et al., COVID-Net, 2020-2023): the label files of its releases.

A release is an image folder per split (``train/``, ``val/``, ``test/``) and one label file per
split (``train.txt``, ``train_COVIDx9A.txt``, ``test_COVIDx3.txt``, ...): space-separated, no
header, in one of three shapes that changed across releases:

* 3 fields, ``patient_id filename class`` (the first releases);
* 4 fields, ``patient_id filename class data_source`` (CXR-2 and later; ``data_source`` names the
  collection the image came from: ``cohen``, ``rsna``, ``sirm``, ...);
* a mix of both in one file (some intermediate releases).

Classes are ``normal`` / ``pneumonia`` / ``COVID-19`` (three-class releases) or ``positive`` /
``negative`` (the binary CXR-3 and later). The shape is declared (``fields: 3``, ``4`` or
``mixed``) or detected (``auto``: the shape of every line, logged) -- never guessed silently: in
``auto`` and ``mixed`` a line is read as 4 fields when its last field is not a class name and
the one before it is, as 3 fields when its last field is a class name. Some file names hold
spaces; with the shape known, the fields between the patient id and the class are the name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medxfer.data.tables import TableError, check_duplicates

__all__ = ["COVIDX_CLASSES", "read_covidx"]

log = logging.getLogger(__name__)

#: The class names of COVIDx releases: three-class and binary.
COVIDX_CLASSES: tuple[str, ...] = ("normal", "pneumonia", "COVID-19", "positive", "negative")

Fields = Literal["auto", "3", "4", "mixed"]


def _image_dir(path: Path) -> Path:
    """The split's image folder beside its label file: ``train/``, ``val/`` or ``test/`` after
    the word in the file name (``train_COVIDx9A.txt`` -> ``train/``)."""
    name = path.name.lower()
    for split in ("train", "val", "test"):
        if split in name:
            return path.parent / split
    raise ValueError(
        f"{path}: cannot tell the image folder from the file name (no train / val / test in it); "
        "give it as root"
    )


def read_covidx(
    path: str | os.PathLike[str],
    labels: Sequence[str] = ("normal", "pneumonia", "COVID-19"),
    image_dir: str | os.PathLike[str] | None = None,
    fields: Fields = "auto",
    drop_duplicates: bool = False,
) -> pd.DataFrame:
    """Read one COVIDx label file: one row per image, one-hot class columns.

    Args:
        path: the label file (``train.txt``, ``test_COVIDx9A.txt``, ...).
        labels: the class names, in the order of the target columns; every line's class must
            be one of them.
        image_dir: the split's image folder (default: ``train/``, ``val/`` or ``test/`` beside
            the file, after its name).
        fields: ``3``, ``4``, ``mixed`` or ``auto`` (detected per line and logged).
        drop_duplicates: drop later lines of an image listed twice when they repeat the first.

    Returns:
        ``path, id`` (the file name), ``patient_id`` (``covidx`` + the patient field), ``sex``
        (Unknown), ``age`` (NaN), ``view`` (Unknown), ``data_source`` (blank with 3 fields), one
        0 / 1 column per class of ``labels``, ``class``, ``source`` and ``line``.

    Raises:
        TableError: a line of another shape than declared, a class outside ``labels``, a blank
            patient id or an image listed twice (naming the file and line).
    """
    path = Path(path)
    labels = list(labels)
    unknown = sorted(set(labels) - set(COVIDX_CLASSES))
    if unknown or not labels:
        raise ValueError(
            f"unknown COVIDx class(es) {unknown or '(none given)'}; choose from {list(COVIDX_CLASSES)}"
        )
    if fields not in ("auto", "3", "4", "mixed"):
        raise ValueError(f"fields must be 'auto', '3', '4' or 'mixed', got {fields!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise TableError(f"{path}: not UTF-8 text ({err.reason})") from None
    source = str(path)
    rows, shapes = [], {"3": 0, "4": 0}
    classes = set(COVIDX_CLASSES)
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise TableError(
                f"{source}: line {number} has {len(parts)} field(s); a COVIDx line is "
                "'patient_id filename class [data_source]'"
            )
        if parts[-1] in classes:
            shape = "3"
        elif len(parts) >= 4 and parts[-2] in classes:
            shape = "4"
        else:
            raise TableError(
                f"{source}: line {number}: no class name ({', '.join(COVIDX_CLASSES)}) in the "
                f"last or second-to-last field: {line.strip()!r}"
            )
        if fields in ("3", "4") and shape != fields:
            raise TableError(
                f"{source}: line {number} is a {shape}-field line ({line.strip()!r}) but fields: "
                f"{fields} is declared; declare fields: mixed (or auto) for a file of both"
            )
        cls = parts[-1] if shape == "3" else parts[-2]
        name = " ".join(parts[1:-1] if shape == "3" else parts[1:-2])
        if cls not in labels:
            raise TableError(
                f"{source}: line {number}, field class: {cls!r} is not one of {labels}"
            )
        shapes[shape] += 1
        rows.append((parts[0], name, cls, parts[-1] if shape == "4" else "", number))
    if not rows:
        raise TableError(f"{source}: the label file has no lines")
    if fields in ("auto", "mixed"):
        log.info(
            "%s: %d line(s) of 3 fields, %d of 4 (fields: %s)",
            source,
            shapes["3"],
            shapes["4"],
            fields,
        )
    if fields == "auto" and shapes["3"] and shapes["4"]:
        log.warning("%s: lines of 3 and of 4 fields in one file; declare fields: mixed", source)
    frame = pd.DataFrame(rows, columns=["patient", "id", "class", "data_source", "line"])
    folder = Path(image_dir) if image_dir is not None else _image_dir(path)
    lines = frame["line"].to_numpy()
    keep = check_duplicates(frame, ["id"], lines, source, "image", drop_duplicates)
    out = pd.DataFrame(
        {
            "path": os.path.join(str(folder), "") + frame["id"],
            "id": frame["id"],
            "patient_id": "covidx" + frame["patient"],
            "sex": "Unknown",
            "age": np.nan,
            "view": "Unknown",
            "data_source": frame["data_source"],
            **{c: (frame["class"] == c).astype(float) for c in labels},
            "class": frame["class"],
            "source": source,
            "line": lines,
        }
    )[keep]
    out.attrs.update(labels=labels, source=source)
    return out
