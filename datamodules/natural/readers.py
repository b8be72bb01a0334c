"""Readers for the natural-image targets of the scale study (CIFAR-10 / -100, Oxford Flowers-102,
Oxford-IIIT Pets), from their real on-disk formats.

Each reader returns one validated table per split with the columns ``path, id, patient_id``
(the image's id: every image is its own "patient" for the template's split), ``class`` (its
class name), ``source`` and ``line``; ``attrs["classes"]`` holds every class name of the
dataset in its official order (the label space, whatever a split holds).

* CIFAR, python version (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
  ``batches.meta``; ``cifar-100-python/train``, ``test``, ``meta``): Python 2 pickles of dicts
  holding a uint8 array ``data`` ``(N, 3072)``, channel-major, and label lists. They are read
  by :class:`SafeUnpickler` (:mod:`medxfer.safe_pickle`), which admits only what those files
  contain (builtin containers, numbers, strings, and the numpy names that rebuild an array) and
  refuses any other global before it is loaded, as medxfer refuses unsafe weight pickles. Keys come back as bytes
  (``encoding="bytes"``) and are read as text.
* CIFAR, binary version (``cifar-10-batches-bin/data_batch_N.bin``, ``test_batch.bin``,
  ``batches.meta.txt``; ``cifar-100-binary/train.bin``, ``test.bin``,
  ``{coarse,fine}_label_names.txt``): records of 1 label byte (CIFAR-100: coarse then fine)
  and 3,072 pixel bytes.
  A CIFAR image's ``path`` is ``<batch file>#<record>``: :func:`read_cifar_image` (the
  ``cifar`` image reader) decodes it from its batch, so CIFAR goes through the same dataset,
  checks and HDF5 cache as image files.
* Flowers-102: ``jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (``labels``, 1..102) and
  ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1-based image numbers), read with
  :func:`scipy.io.loadmat`. The released files carry no class names: classes are named by
  their number (``"1"``..``"102"``).
* Oxford-IIIT Pets: ``images/<Breed_name>_<n>.jpg`` and ``annotations/trainval.txt`` /
  ``test.txt``: ``Image CLASS-ID SPECIES BREED-ID`` per line, ``#`` comment lines, class ids
  1..37; the class name is the image name without its number (``Abyssinian``,
  ``american_bulldog``).
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medxfer.data.images import ImageDecodeError, split_member, where
from medxfer.data.tables import TableError
from medxfer.safe_pickle import RestrictedUnpickler, numpy_globals

__all__ = [
    "CIFAR_FILES",
    "SafeUnpickler",
    "UnsafePickleError",
    "cifar_classes",
    "load_pickle",
    "read_cifar",
    "read_cifar_image",
    "read_flowers",
    "read_pets",
]

#: ``(variant, format)`` -> (folder, training batches, test batch, class-name file(s)).
CIFAR_FILES: dict[tuple[str, str], tuple[str, tuple[str, ...], str]] = {
    ("cifar10", "python"): (
        "cifar-10-batches-py", tuple(f"data_batch_{k}" for k in range(1, 6)), "test_batch",
    ),
    ("cifar100", "python"): ("cifar-100-python", ("train",), "test"),
    ("cifar10", "binary"): (
        "cifar-10-batches-bin", tuple(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin",
    ),
    ("cifar100", "binary"): ("cifar-100-binary", ("train.bin",), "test.bin"),
}  # fmt: skip
_PIXELS = 3072
#: What a CIFAR pickle may hold, for the refusal's message.
_CIFAR_HOLDS = "a dataset pickle holds only builtin values and numpy arrays"


class UnsafePickleError(TableError):
    """A pickle names a type a dataset file never holds; it was refused before it ran."""


class SafeUnpickler(RestrictedUnpickler):
    """The unpickler of dataset pickles: builtin values (dicts, lists, tuples, numbers, strings,
    bytes) and numpy arrays only (:func:`medxfer.safe_pickle.numpy_globals`); anything else is
    an :class:`UnsafePickleError` before it is loaded."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, source, numpy_globals(), error=UnsafePickleError, what=_CIFAR_HOLDS)


def _text(value: Any) -> Any:
    """Bytes (a Python 2 ``str``) as text; containers recursively; anything else as it is."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def load_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A CIFAR pickle through :class:`SafeUnpickler`, keys and names as text.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the file names a type outside the allowed ones.
        TableError: not a pickle of a dict (truncated, or another file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            value = SafeUnpickler(f, str(path)).load()  # type: ignore[arg-type]
    except UnsafePickleError:
        raise
    except Exception as err:  # any unpickling failure: a bad file
        raise TableError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(value, dict):
        raise TableError(f"{path}: a CIFAR pickle holds a dict, this one a {type(value).__name__}")
    return _text(value)


def _key(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise TableError(f"{path}: no {key!r} in the pickle (keys: {sorted(batch)})")
    return batch[key]


@lru_cache(maxsize=8)
def _batch(path: str, mtime: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One batch file's images ``(N, 32, 32, 3)`` uint8, labels and (CIFAR-100) coarse labels;
    cached per process (a worker decodes a batch once, keyed by its modification time)."""
    del mtime  # part of the cache key only
    p = Path(path)
    if p.suffix == ".bin":
        raw = np.fromfile(p, dtype=np.uint8)
        width = _PIXELS + (2 if "cifar-100" in p.parent.name else 1)
        if raw.size == 0 or raw.size % width:
            raise TableError(
                f"{p}: {raw.size} bytes is not a whole number of {width}-byte CIFAR records"
            )
        records = raw.reshape(-1, width)
        labels, coarse = records[:, width - _PIXELS - 1], None
        if width == _PIXELS + 2:
            coarse = records[:, 0]
        data = records[:, width - _PIXELS :]
    else:
        batch = load_pickle(p)
        data = np.asarray(_key(batch, "data", p))
        fine = "fine_labels" if "fine_labels" in batch else "labels"
        labels = np.asarray(_key(batch, fine, p), dtype=np.int64)
        coarse = (
            np.asarray(batch["coarse_labels"], dtype=np.int64) if "coarse_labels" in batch else None
        )
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise TableError(
                f"{p}: 'data' is {data.dtype} {data.shape}, a CIFAR batch holds uint8 (N, 3072)"
            )
        if len(labels) != len(data):
            raise TableError(f"{p}: {len(labels)} labels for {len(data)} images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels), coarse


def _open_batch(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return _batch(path, os.stat(path).st_mtime)


def read_cifar_image(path: str | os.PathLike[str], context: str = "") -> np.ndarray:
    """The ``cifar`` image reader: ``<batch file>#<record>`` -> float32 ``(32, 32, 3)`` in [0, 1].

    Raises:
        ImageDecodeError: no ``#record``, a missing or unreadable batch, or a record past its
            end (naming the path and ``context``).
    """
    file, record = split_member(path)
    if not record.isdigit():
        raise ImageDecodeError(f"not a CIFAR record path <batch file>#<n>: {where(path, context)}")
    try:
        images, _, _ = _open_batch(file)
    except (OSError, TableError) as err:
        raise ImageDecodeError(f"could not decode image {where(path, context)}: {err}") from None
    k = int(record)
    if k >= len(images):
        raise ImageDecodeError(f"record {k} is past the end of {where(path, context)}")
    return images[k].astype(np.float32) * np.float32(1 / 255)


def cifar_classes(
    root: str | os.PathLike[str],
    variant: Literal["cifar10", "cifar100"],
    fmt: Literal["python", "binary"] = "python",
    labels: Literal["fine", "coarse"] = "fine",
) -> list[str]:
    """The class names of a CIFAR download, in label order, from its meta file."""
    folder = Path(root) / CIFAR_FILES[(variant, fmt)][0]
    if fmt == "python":
        meta_path = folder / ("batches.meta" if variant == "cifar10" else "meta")
        meta = load_pickle(meta_path)
        key = "label_names" if variant == "cifar10" else f"{labels}_label_names"
        names = _key(meta, key, meta_path)
    else:
        name = "batches.meta.txt" if variant == "cifar10" else f"{labels}_label_names.txt"
        meta_path = folder / name
        if not meta_path.is_file():
            raise FileNotFoundError(f"CIFAR file not found: {meta_path}")
        names = [n.strip() for n in meta_path.read_text().splitlines() if n.strip()]
    return [str(n) for n in names]


def read_cifar(
    root: str | os.PathLike[str],
    variant: Literal["cifar10", "cifar100"] = "cifar10",
    split: Literal["train", "test"] = "train",
    fmt: Literal["python", "binary"] = "python",
    labels: Literal["fine", "coarse"] = "fine",
) -> pd.DataFrame:
    """One split of a CIFAR download (the folder holding ``cifar-10-batches-py/`` or its
    siblings): one row per image, ``path`` = ``<batch>#<record>``.

    Args:
        root: the folder the archive was extracted into.
        variant: ``cifar10`` or ``cifar100``.
        split: ``train`` (the 5 training batches, or CIFAR-100's ``train``) or ``test``.
        fmt: ``python`` (pickles) or ``binary`` (``.bin`` records).
        labels: CIFAR-100: ``fine`` (100 classes) or ``coarse`` (20 superclasses).

    Raises:
        FileNotFoundError: a batch or meta file that is not there.
        UnsafePickleError: a pickle naming a type outside builtin values and numpy arrays.
        TableError: a malformed batch, or a label outside the class list.
    """
    if (variant, fmt) not in CIFAR_FILES:
        raise ValueError(f"unknown CIFAR variant / format {variant!r} / {fmt!r}")
    folder, train_files, test_file = CIFAR_FILES[(variant, fmt)]
    classes = cifar_classes(root, variant, fmt, labels)
    frames = []
    for name in train_files if split == "train" else (test_file,):
        path = Path(root) / folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR file not found: {path}")
        _, fine, coarse = _open_batch(str(path))
        y = coarse if (variant == "cifar100" and labels == "coarse") else fine
        if y is None:
            raise TableError(f"{path}: no coarse labels in this file")
        bad = (y < 0) | (y >= len(classes))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise TableError(
                f"{path}: record {k}: label {int(y[k])} is not one of 0..{len(classes) - 1}"
            )
        n = np.arange(len(y))
        ids = [f"{name.removesuffix('.bin')}:{k}" for k in n]
        frames.append(
            pd.DataFrame(
                {
                    "path": [f"{path}#{k}" for k in n],
                    "id": ids,
                    "patient_id": ids,
                    "class": np.asarray(classes, dtype=object)[y],
                    "source": str(path),
                    "line": n + 1,
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(classes=classes)
    return out


def _mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The 1-D integer arrays ``keys`` of a MATLAB file; a missing key is an error naming it."""
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"Flowers-102 file not found: {path}")
    try:
        mat = loadmat(path)
    except Exception as err:  # any parse failure: a bad file
        raise TableError(f"{path}: not a readable MATLAB file ({err})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise TableError(f"{path}: no {missing} in the file (it holds {found})")
    return {k: np.asarray(mat[k]).ravel().astype(np.int64) for k in keys}


def read_flowers(
    root: str | os.PathLike[str],
    split: Literal["train", "test"] = "train",
    protocol: Literal["official", "swapped"] = "official",
) -> pd.DataFrame:
    """One split of Oxford Flowers-102 (the folder holding ``jpg/``, ``imagelabels.mat`` and
    ``setid.mat``).

    ``protocol``: ``official`` trains on the published training and validation ids (``trnid``
    + ``valid``, 2,040 images) and tests on ``tstid`` (6,149); ``swapped`` is the scale study's
    choice, training on ``tstid`` and testing on ``trnid`` + ``valid``. Model-selection data is
    carved from the training split by the datamodule, seeded.

    Raises:
        TableError: a ``.mat`` without ``labels`` / ``trnid`` / ``valid`` / ``tstid``, an id
            outside the label list, a label outside 1..102.
    """
    root = Path(root)
    labels = _mat(root / "imagelabels.mat", ("labels",))["labels"]
    ids = _mat(root / "setid.mat", ("trnid", "valid", "tstid"))
    bad = (labels < 1) | (labels > 102)
    if bad.any():
        raise TableError(
            f"{root / 'imagelabels.mat'}: label {int(labels[bad][0])} of image "
            f"{int(np.flatnonzero(bad)[0]) + 1} is outside 1..102"
        )
    train_ids = np.concatenate([ids["trnid"], ids["valid"]])
    if protocol not in ("official", "swapped"):
        raise ValueError(f"protocol must be 'official' or 'swapped', got {protocol!r}")
    if protocol == "official":
        chosen = train_ids if split == "train" else ids["tstid"]
    else:
        chosen = ids["tstid"] if split == "train" else train_ids
    outside = (chosen < 1) | (chosen > len(labels))
    if outside.any():
        raise TableError(
            f"{root / 'setid.mat'}: image number {int(chosen[outside][0])} is outside 1.."
            f"{len(labels)} (imagelabels.mat)"
        )
    chosen = np.sort(chosen)
    names = [f"image_{k:05d}" for k in chosen]
    out = pd.DataFrame(
        {
            "path": [str(root / "jpg" / f"{n}.jpg") for n in names],
            "id": names,
            "patient_id": names,
            "class": [str(c) for c in labels[chosen - 1]],
            "source": str(root / "setid.mat"),
            "line": chosen,
        }
    )
    out.attrs.update(classes=[str(k) for k in range(1, 103)])
    return out


def read_pets(
    root: str | os.PathLike[str], split: Literal["trainval", "test"] = "trainval"
) -> pd.DataFrame:
    """One split of Oxford-IIIT Pets (the folder holding ``images/`` and ``annotations/``):
    ``annotations/trainval.txt`` or ``test.txt``.

    Raises:
        TableError: a line without the four fields ``Image CLASS-ID SPECIES BREED-ID``, a class
            id outside 1..37, or an image whose name disagrees with another of its class
            (naming the file and line).
    """
    root = Path(root)
    path = root / "annotations" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Pets annotation file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise TableError(
                f"{path}: line {number} has {len(parts)} field(s) {parts}; expected 'Image "
                "CLASS-ID SPECIES BREED-ID' (three numbers)"
            )
        class_id = int(parts[1])
        if not 1 <= class_id <= 37:
            raise TableError(f"{path}: line {number}: class id {class_id} is outside 1..37")
        rows.append((parts[0], class_id, parts[0].rsplit("_", 1)[0], number))
    if not rows:
        raise TableError(f"{path}: no image lines")
    frame = pd.DataFrame(rows, columns=["id", "class_id", "name", "line"])
    names = frame.groupby("class_id")["name"].agg(lambda s: sorted(set(s)))
    for class_id, found in names.items():
        if len(found) > 1:
            at = frame.loc[frame["class_id"] == class_id, "line"].tolist()[:3]
            raise TableError(f"{path}: class id {class_id} names breeds {found} (lines {at})")
    out = pd.DataFrame(
        {
            "path": [str(root / "images" / f"{i}.jpg") for i in frame["id"]],
            "id": frame["id"],
            "patient_id": frame["id"],
            "class": frame["name"],
            "source": str(path),
            "line": frame["line"],
        }
    )
    # the class names in class-id order, from the split's own lines (every Pets split has all 37)
    out.attrs.update(classes=[names[k][0] for k in sorted(names.index)])
    return out
