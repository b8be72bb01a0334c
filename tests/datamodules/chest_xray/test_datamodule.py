"""Chest X-ray datamodule: patient-level splits, grey containers, shifted sets, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medxfer.data import ImageDecodeError, patient_split, read_grey_image
from medxfer.datamodules import age_group
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable


def test_patient_split_has_no_leakage_and_sizes_within_one_percent() -> None:
    rng = np.random.default_rng(3)
    per_patient = rng.integers(1, 12, size=3000)
    table = pd.DataFrame({"patient_id": np.repeat(np.arange(3000), per_patient)})
    fractions = (0.75, 0.10, 0.15)
    parts = patient_split(table, fractions, seed=7)
    patients = [set(p["patient_id"]) for p in parts]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert sum(len(p) for p in parts) == len(table)
    for part, f in zip(parts, fractions, strict=True):
        assert abs(len(part) / len(table) - f) < 0.01
    again = patient_split(table, fractions, seed=7)
    assert all(a.index.equals(b.index) for a, b in zip(parts, again, strict=True))
    other = patient_split(table, fractions, seed=8)
    assert not parts[1].index.equals(other[1].index)


@pytest.mark.parametrize(
    ("mode", "scale"),
    [
        pytest.param("L", 255, id="L"),
        pytest.param("RGB", 255, id="RGB"),
        pytest.param("RGBA", 255, id="RGBA"),
        pytest.param("I;16", 65535, id="16-bit"),
    ],
)
def test_grey_containers_decode_to_the_same_plane(tmp_path: Path, mode: str, scale: int) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 8)).astype(np.uint8)  # sides >= MIN_SIDE (8)
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(grey).convert(mode)
    img.save(tmp_path / "x.png")
    got = read_grey_image(tmp_path / "x.png")
    np.testing.assert_allclose(
        got, grey.astype(np.float32) * (257 if mode == "I;16" else 1) / scale, atol=1e-6
    )


def test_missing_and_corrupt_images_name_file_and_line(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError, match=r"bad.png \(line 9 of t.csv\)"):
        read_grey_image(tmp_path / "bad.png", context="line 9 of t.csv")
    src = synthetic_cxr["chexpert"]
    table = pd.read_csv(src, dtype=str, keep_default_na=False)
    root = tmp_path / "copy"
    (root / "CheXpert-v1.0-synthetic").mkdir(parents=True)
    table.to_csv(root / "CheXpert-v1.0-synthetic" / "train.csv", index=False)
    for p in table["Path"]:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes((src.parent.parent / p).read_bytes())
    victim = table[table["Frontal/Lateral"] == "Frontal"]["Path"].iloc[3]
    line = int(table.index[table["Path"] == victim][0]) + 2
    (root / victim).unlink()
    dm = ChestXrayDataModule(
        CXRTable(str(root / "CheXpert-v1.0-synthetic" / "train.csv")), image_size=32, num_workers=0
    )
    with pytest.raises(ImageDecodeError, match=rf"image not found: .*{victim} \(line {line} of "):
        dm.setup("fit")
    (root / victim).write_bytes(b"garbage")
    dm = ChestXrayDataModule(
        CXRTable(str(root / "CheXpert-v1.0-synthetic" / "train.csv")),
        image_size=32,
        num_workers=0,
        skip_bad_images=True,
    )
    dm.setup("fit")
    n = len(dm.train_set) + len(dm.val_set) + len(dm.test_sets["chexpert"])
    assert n == int((table["Frontal/Lateral"] == "Frontal").sum()) - 1


def test_batches_follow_the_contract_and_shifted_sets_are_separate(
    synthetic_cxr: dict[str, Path],
) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])),
        shifted={"nih": CXRTable(str(synthetic_cxr["nih"]), format="nih")},
        image_size=32,
        batch_size=4,
        num_workers=0,
        age_bins=(40, 60),
    )
    dm.setup("fit")
    assert dm.eval_names == ["chexpert", "nih"] and dm.num_classes == 5
    batch = next(iter(dm.train_dataloader()))
    # 8-bit pixels across the loader (the task normalises them on the device)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (4, 5)
    assert set(batch["groups"]) == {"sex", "age", "view"} and len(batch["groups"]["age"]) == 4
    assert set(batch["groups"]["age"]) <= {"<40", "40-59", "60+"}
    assert all(isinstance(i, str) and "/" not in i for i in batch["id"])
    loaders = dm.test_dataloader()
    assert len(loaders) == 2
    assert len(loaders[1].dataset) == len(
        pd.read_csv(synthetic_cxr["nih"], index_col=False, usecols=range(7))
    )
    train_patients = {i.split("_")[0] for i in dm.train_set.ids}
    test_patients = {i.split("_")[0] for i in dm.test_sets["chexpert"].ids}
    assert not train_patients & test_patients


def test_explicit_tables_require_zero_fractions(synthetic_cxr: dict[str, Path]) -> None:
    table = CXRTable(str(synthetic_cxr["chexpert"]))
    with pytest.raises(ValueError, match="set their fractions to 0"):
        ChestXrayDataModule(table, test=table)


def test_empty_split_says_which(synthetic_cxr: dict[str, Path]) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), split=(0.9, 0.1, 0.0), num_workers=0
    )
    with pytest.raises(ValueError, match=r"chexpert test split .* is empty"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("age", "group"),
    [
        pytest.param(39.9, "<40", id="below"),
        pytest.param(40, "40-59", id="edge"),
        pytest.param(80, "80+", id="top"),
        pytest.param(float("nan"), "unknown", id="nan"),
    ],
)
def test_age_groups(age: float, group: str) -> None:
    assert age_group(age, (40, 60, 80)) == group


def test_real_nih_subset_through_the_datamodule(nih_subset: Path) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(nih_subset), format="nih"),
        name="nih",
        labels=["Effusion", "Infiltration", "Atelectasis", "Cardiomegaly"],
        image_size=32,
        batch_size=8,
        num_workers=0,
        verify_images=True,
    )
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_sets["nih"]) == 1000
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32)
    # RGBA and RGB containers of the real files decode to equal channels
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])
