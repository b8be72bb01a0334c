"""Synthetic natural-image datasets written in the real on-disk formats of CIFAR (python
pickles, Python 2 style with bytes keys, and the binary records), Flowers-102 (JPEGs and MATLAB
files) and Oxford-IIIT Pets (JPEGs and annotation lists), read by the same readers as the real
downloads. Each class draws its own colour and stripe pattern (with noise, brightness and a
random offset), which a small CNN tells apart within a few hundred CPU steps."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from .readers import CIFAR_FILES

__all__ = [
    "PETS_BREEDS",
    "render_class",
    "write_synthetic_cifar",
    "write_synthetic_flowers",
    "write_synthetic_pets",
]

#: The 37 Oxford-IIIT Pets breeds: cats capitalised, dogs lower case, as in the image names.
PETS_BREEDS: tuple[str, ...] = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau", "Maine_Coon",
    "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx", "american_bulldog",
    "american_pit_bull_terrier", "basset_hound", "beagle", "boxer", "chihuahua",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "miniature_pinscher", "newfoundland",
    "pomeranian", "pug", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu",
    "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_PALETTE = np.array(
    [[230, 40, 40], [40, 180, 40], [40, 60, 230], [230, 200, 30], [200, 40, 200],
     [30, 200, 210], [250, 140, 20], [120, 70, 30], [150, 150, 150], [20, 20, 20]],
    dtype=np.float32,
)  # fmt: skip


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Protocol 2 as Python 2's ``cPickle`` wrote it: a ``bytes`` value is a Python 2 ``str``
    (``SHORT_BINSTRING`` / ``BINSTRING``), where Python 3 writes ``_codecs.encode(...)`` calls.
    What the real CIFAR files hold, and what ``pickle.load(encoding="bytes")`` reads as bytes."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _python2_pickle(value: object) -> bytes:
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(value)
    return out.getvalue()


def render_class(k: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One uint8 ``(size, size, 3)`` image of class ``k``: colour ``k % 10`` and a stripe
    frequency and direction from ``k // 10``, with a random phase, brightness and noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = k // 10
    freq, angle = 1 + pattern % 5, (pattern // 5) * np.pi / 2 + rng.normal(0, 0.1)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    colour = _PALETTE[k % 10] * rng.uniform(0.7, 1.1)
    image = stripes[..., None] * colour + (1 - stripes[..., None]) * 60.0
    image += rng.normal(0, 18, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_cifar(
    out_dir: str | os.PathLike[str],
    variant: str = "cifar10",
    fmt: str = "python",
    n_train: int = 500,
    n_test: int = 200,
    seed: int = 0,
) -> Path:
    """Write a CIFAR download into ``out_dir``: ``cifar-10-batches-py/`` (five training batches,
    ``test_batch``, ``batches.meta``), ``cifar-100-python/`` (``train``, ``test``, ``meta``) or
    their binary versions, with ``n_train`` / ``n_test`` images of 32 x 32.

    Pickles are written as Python 2 wrote them (protocol 2, every key and name a Python 2
    ``str``, read back as ``bytes``);
    CIFAR-100 images carry fine labels 0..99 and coarse labels ``fine // 5``.

    Returns:
        The dataset folder (``out_dir``), what the datamodule's ``root`` takes.
    """
    rng = np.random.default_rng(seed)
    folder, train_files, test_file = CIFAR_FILES[(variant, fmt)]
    n_classes = 10 if variant == "cifar10" else 100
    base = Path(out_dir) / folder
    base.mkdir(parents=True, exist_ok=True)
    fine_names = (
        list(_CIFAR10_NAMES) if variant == "cifar10" else [f"class_{k:02d}" for k in range(100)]
    )
    coarse_names = [f"superclass_{k:02d}" for k in range(20)]
    parts = np.array_split(np.arange(n_train), len(train_files))
    for name, count in [*zip(train_files, map(len, parts), strict=True), (test_file, n_test)]:
        labels = rng.integers(0, n_classes, count)
        data = np.stack([render_class(int(k), rng).transpose(2, 0, 1).ravel() for k in labels])
        if fmt == "binary":
            head = labels[:, None] if variant == "cifar10" else np.stack([labels // 5, labels], 1)
            np.concatenate([head.astype(np.uint8), data], axis=1).tofile(base / name)
            continue
        batch: dict[bytes, object] = {
            b"batch_label": f"{name} of synthetic CIFAR".encode(),
            b"data": data,
            b"filenames": [f"synthetic_{name}_{i}.png".encode() for i in range(count)],
        }
        if variant == "cifar10":
            batch[b"labels"] = [int(k) for k in labels]
        else:
            batch[b"fine_labels"] = [int(k) for k in labels]
            batch[b"coarse_labels"] = [int(k) // 5 for k in labels]
        (base / name).write_bytes(_python2_pickle(batch))
    if fmt == "binary":
        if variant == "cifar10":
            (base / "batches.meta.txt").write_text("\n".join(fine_names) + "\n\n")
        else:
            (base / "fine_label_names.txt").write_text("\n".join(fine_names) + "\n")
            (base / "coarse_label_names.txt").write_text("\n".join(coarse_names) + "\n")
    else:
        meta: dict[bytes, object] = (
            {b"label_names": [n.encode() for n in fine_names], b"num_cases_per_batch": 10000}
            if variant == "cifar10"
            else {
                b"fine_label_names": [n.encode() for n in fine_names],
                b"coarse_label_names": [n.encode() for n in coarse_names],
            }
        )
        meta_name = "batches.meta" if variant == "cifar10" else "meta"
        (base / meta_name).write_bytes(_python2_pickle(meta))
    return Path(out_dir)


def write_synthetic_flowers(
    out_dir: str | os.PathLike[str],
    n_images: int = 306,
    n_classes: int = 102,
    size: int = 48,
    seed: int = 0,
) -> Path:
    """Write a Flowers-102 download: ``jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (``labels``
    1..102, ``uint8`` like the real file) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``,
    1-based, ``uint16``): as in the real split, the training and validation ids hold the same
    number of images per class and the test ids the rest.

    Returns:
        The dataset folder.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "jpg").mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_images) % n_classes + 1
    rng.shuffle(labels)
    trn, val, tst = [], [], []
    for c in range(1, n_classes + 1):
        ids = np.flatnonzero(labels == c) + 1
        trn += ids[:1].tolist()
        val += ids[1:2].tolist()
        tst += ids[2:].tolist()
    for k, c in enumerate(labels, start=1):
        Image.fromarray(render_class(int(c) - 1, rng, size)).save(
            out / "jpg" / f"image_{k:05d}.jpg", quality=95
        )
    savemat(out / "imagelabels.mat", {"labels": labels[None].astype(np.uint8)})
    savemat(
        out / "setid.mat",
        {
            name: np.array([ids], dtype=np.uint16)
            for name, ids in (("trnid", trn), ("valid", val), ("tstid", tst))
        },
    )
    return out


def write_synthetic_pets(
    out_dir: str | os.PathLike[str],
    per_class: int = 6,
    size: int = 48,
    seed: int = 0,
) -> Path:
    """Write an Oxford-IIIT Pets download: ``images/<Breed>_<n>.jpg`` and
    ``annotations/trainval.txt`` / ``test.txt`` (``Image CLASS-ID SPECIES BREED-ID`` after the
    real files' ``#`` comment header; class ids 1..37 in alphabetical order of the breeds, cats
    species 1, dogs 2), half of each class's images in each split.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    header = [
        "#Image CLASS-ID SPECIES BREED-ID",
        "#ID: 1:37 Class ids",
        "#SPECIES: 1:Cat 2:Dog",
        "#BREED ID: 1-25:Cat 1:12:Dog",
        "#All images with 1st letter as captial are cat images",
        "#images with small first letter are dog images",
    ]
    lines: dict[str, list[str]] = {"trainval": list(header), "test": list(header)}
    breeds = sorted(PETS_BREEDS, key=str.lower)
    cats = sorted((b for b in breeds if b[0].isupper()), key=str.lower)
    dogs = sorted((b for b in breeds if b[0].islower()), key=str.lower)
    for class_id, breed in enumerate(breeds, start=1):
        cat = breed[0].isupper()
        species, breed_id = (1, cats.index(breed) + 1) if cat else (2, dogs.index(breed) + 1)
        for n in range(1, per_class + 1):
            name = f"{breed}_{n}"
            Image.fromarray(render_class(class_id - 1, rng, size)).save(
                out / "images" / f"{name}.jpg", quality=95
            )
            split = "trainval" if n <= per_class // 2 else "test"
            lines[split].append(f"{name} {class_id} {species} {breed_id}")
    for split, rows in lines.items():
        (out / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return out
