"""Natural-image targets: each reader on files written in the real format (CIFAR as Python 2
pickles with bytes keys and as binary records, Flowers' MATLAB files, Pets' annotation lists),
counts per class against an independent parse, the unpickler refusing an injected object
before it runs, k-shot draws exact and nested, and the BiT-HyperRule of a natural target."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

from medxfer.data.tables import TableError
from medxfer.datamodules.natural import (
    NaturalImageDataModule,
    UnsafePickleError,
    read_cifar,
    read_cifar_image,
    read_flowers,
    read_pets,
    write_synthetic_cifar,
    write_synthetic_flowers,
    write_synthetic_pets,
)
from medxfer.hyperrule import hyperrule_of


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cifar(tmp_path_factory.mktemp("c10"), "cifar10", "python", 250, 60)


def test_cifar10_pickles_count_and_decode_like_plain_pickle(cifar10: Path) -> None:
    folder = cifar10 / "cifar-10-batches-py"
    batches = [
        pickle.loads((folder / f"data_batch_{k}").read_bytes(), encoding="bytes")
        for k in range(1, 6)
    ]
    assert all(isinstance(key, bytes) for key in batches[0]), "Python 2 style: bytes keys"
    names = pickle.loads((folder / "batches.meta").read_bytes(), encoding="bytes")[b"label_names"]
    want = Counter(names[k].decode() for b in batches for k in b[b"labels"])
    df = read_cifar(cifar10, "cifar10", "train")
    assert Counter(df["class"]) == want and len(df) == 250
    row = df.iloc[57]  # batch 2 (50 images per batch), record 7
    assert row["path"].endswith("data_batch_2#7") and row["line"] == 8
    pixels = batches[1][b"data"][7].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.round(read_cifar_image(row["path"]) * 255), pixels)
    assert len(read_cifar(cifar10, "cifar10", "test")) == 60


class _WritesAFile:
    """What a malicious pickle holds: unpickling it would call ``open(path, "w")``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_an_injected_object_is_refused_before_it_runs(cifar10: Path, tmp_path: Path) -> None:
    root = tmp_path / "evil"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in os.listdir(cifar10 / "cifar-10-batches-py"):
        (folder / name).write_bytes((cifar10 / "cifar-10-batches-py" / name).read_bytes())
    target = tmp_path / "written.txt"
    batch = pickle.loads((folder / "data_batch_3").read_bytes(), encoding="bytes")
    batch[b"batch_label"] = _WritesAFile(str(target))
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"data_batch_3: refused to load io\.open"):
        read_cifar(root, "cifar10", "train")
    assert not target.exists()


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100_binary_records(labels: str, tmp_path: Path) -> None:
    root = write_synthetic_cifar(tmp_path, "cifar100", "binary", 120, 30)
    raw = np.fromfile(root / "cifar-100-binary" / "train.bin", dtype=np.uint8).reshape(-1, 3074)
    column = 0 if labels == "coarse" else 1
    df = read_cifar(root, "cifar100", "train", "binary", labels)  # type: ignore[arg-type]
    names = (root / "cifar-100-binary" / f"{labels}_label_names.txt").read_text().split()
    assert Counter(df["class"]) == Counter(names[k] for k in raw[:, column])
    pixels = raw[5, 2:].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.round(read_cifar_image(df["path"].iloc[5]) * 255), pixels)
    (root / "cifar-100-binary" / "test.bin").write_bytes(raw.tobytes()[:-10])
    with pytest.raises(TableError, match=r"not a whole number of 3074-byte CIFAR records"):
        read_cifar(root, "cifar100", "test", "binary")


@pytest.mark.parametrize("protocol", ["official", "swapped"])
def test_flowers_splits_against_the_mat_files(protocol: str, tmp_path: Path) -> None:
    root = write_synthetic_flowers(tmp_path, n_images=40, n_classes=10, size=24)
    labels = loadmat(root / "imagelabels.mat")["labels"].ravel()
    ids = {k: loadmat(root / "setid.mat")[k].ravel() for k in ("trnid", "valid", "tstid")}
    trainval = np.concatenate([ids["trnid"], ids["valid"]])
    train_ids = trainval if protocol == "official" else ids["tstid"]
    df = read_flowers(root, "train", protocol)  # type: ignore[arg-type]
    assert sorted(df["line"]) == sorted(train_ids.tolist())
    assert Counter(df["class"]) == Counter(str(c) for c in labels[train_ids - 1])
    assert len(read_flowers(root, "test", protocol)) == 40 - len(train_ids)  # type: ignore[arg-type]
    savemat(root / "setid.mat", {"trnid": ids["trnid"][None], "tstid": ids["tstid"][None]})
    with pytest.raises(TableError, match=r"setid.mat: no \['valid'\] in the file"):
        read_flowers(root, "train")


def test_pets_lists(tmp_path: Path) -> None:
    root = write_synthetic_pets(tmp_path, per_class=2, size=24)
    lines = (root / "annotations" / "trainval.txt").read_text().splitlines()
    records = [line.split() for line in lines if not line.startswith("#")]
    df = read_pets(root, "trainval")
    assert len(df) == 37 and Counter(df["class"]) == Counter(
        r[0].rsplit("_", 1)[0] for r in records
    )
    assert df["line"].tolist() == [n for n, line in enumerate(lines, 1) if not line.startswith("#")]
    assert df.attrs["classes"][0] == "Abyssinian" and df.attrs["classes"][1] == "american_bulldog"
    (root / "annotations" / "test.txt").write_text("#c\nAbyssinian_9 1 1\n")
    with pytest.raises(TableError, match=r"test.txt: line 2 has 3 field"):
        read_pets(root, "test")


def test_k_shot_is_exact_and_nested(cifar10: Path) -> None:
    def train_ids(k: int, seed: int = 0) -> set[str]:
        dm = NaturalImageDataModule(
            str(cifar10),
            shots_per_class=k,
            subsample_seed=seed,
            image_size=32,
            resize=32,
            num_workers=0,
        )
        parts = dm.prepare_tables()
        kept = dm.subsample_train(parts["train"], dm.strata(parts["train"]), "train")
        counts = Counter(kept["class"])
        smallest = Counter(parts["train"]["class"]).most_common()[-1][1]
        assert set(counts.values()) == {min(k, smallest)}
        return set(kept["id"])

    one, two, five = train_ids(1), train_ids(2), train_ids(5)
    assert one < two < five
    assert train_ids(2, seed=1) != two


def test_datamodule_batches_and_the_hyperrule_of_a_natural_target(cifar10: Path) -> None:
    dm = NaturalImageDataModule(str(cifar10), image_size=32, resize=36, batch_size=8, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (8, 10) and torch.all(batch["target"].sum(1) == 1)
    assert dm.label_names[:2] == ["airplane", "automobile"] and len(dm.test_sets["cifar10"]) == 60
    train, val = dm.prepare_tables()["train"], dm.prepare_tables()["val"]
    whole = Counter(train["class"]) + Counter(val["class"])
    for c, n in whole.items():  # the validation carve is stratified: each class near 10 %
        assert abs(Counter(val["class"])[c] - 0.1 * n) <= 1
    rule = hyperrule_of(dm)  # 225 training images of 32 x 32: the published small-data rule
    assert rule.resolution == (160, 128) and rule.schedule == (100, 200, 300, 400, 500)
    assert rule.mixup == 0.0 and rule.base_lr == 0.003 and rule.batch_size == 512


def test_a_small_cnn_learns_synthetic_cifar_on_cpu(tmp_path: Path, tiny_trainer) -> None:
    """Two epochs on 400 synthetic CIFAR-10 images: top-1 on the official test batch far above
    chance (0.1)."""
    from medxfer.tasks import CaseClassifier

    root = write_synthetic_cifar(tmp_path, "cifar10", "python", 400, 100, seed=1)
    dm = NaturalImageDataModule(str(root), image_size=32, resize=32, batch_size=32, num_workers=0)
    dm.setup("fit")
    task = CaseClassifier(
        backbone="timm/test_resnet",
        num_classes=10,
        label_names=dm.label_names,
        lr=0.003,
        optimizer="adam",
    )
    trainer = tiny_trainer(
        max_steps=-1, max_epochs=2, limit_val_batches=None, limit_test_batches=None
    )
    trainer.fit(task, datamodule=dm)
    (result,) = trainer.test(task, datamodule=dm, verbose=False)
    assert result["test/cifar10/top1"] > 0.5, result
