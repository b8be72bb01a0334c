"""The segmentation datamodule: each real layout read from its synthetic copy, masks aligned with
images through augmentation, bad inputs named, and a fit from YAML that learns."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medxfer import artifacts
from medxfer.data.images import ImageDecodeError
from medxfer.data.rle import rle_decode
from medxfer.data.tables import TableError
from medxfer.datamodules.segmentation import (
    SegmentationDataModule,
    SegmentationTransform,
    read_siim,
    write_synthetic_montgomery,
)

REPO = Path(__file__).resolve().parents[3]


def _mask_png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def test_montgomery_layout_union_and_two_lungs(seg) -> None:
    kw = dict(layout="montgomery", image_size=48, augment=False, num_workers=0)
    union = SegmentationDataModule(str(seg["montgomery"]), **kw)
    union.setup("fit")
    assert union.label_names == ["lung"]
    sample = union.val_set[0]
    name = Path(union.val_set.paths[0]).name
    left = _mask_png(seg["montgomery"] / "ManualMask/leftMask" / name)
    right = _mask_png(seg["montgomery"] / "ManualMask/rightMask" / name)
    np.testing.assert_array_equal(sample["target"][0].numpy() > 0, left | right)
    assert set(sample["groups"]) == {"sex", "age", "tb"}
    reading = (seg["montgomery"] / "ClinicalReadings" / name).with_suffix(".txt").read_text()
    # the reading's F / M read through the project's sex list
    assert f"Sex: {sample['groups']['sex'][0]}" in reading
    assert sample["groups"]["sex"] in ("Female", "Male")
    two = SegmentationDataModule(str(seg["montgomery"]), lungs="left_right", **kw)
    two.setup("fit")
    target = two.val_set[0]["target"]
    assert two.label_names == ["left_lung", "right_lung"] and target.shape == (2, 48, 48)
    np.testing.assert_array_equal(target[0].numpy() > 0, left)


def test_drive_layout_with_field_of_view_and_official_test_part(seg) -> None:
    dm = SegmentationDataModule(
        str(seg["drive"] / "training"),
        test=str(seg["drive"] / "test"),
        layout="drive",
        split=(0.9, 0.1, 0.0),
        image_size=48,
        augment=False,
        num_workers=0,
    )
    dm.setup("fit")
    assert (len(dm.train_set) + len(dm.val_set), len(dm.test_sets["seg"])) == (10, 4)
    assert dm.channels == 3 and dm.recipe == "fundus"
    sample = dm.test_sets["seg"][0]
    fov = _mask_png(seg["drive"] / "test/mask/01_test_mask.gif")
    vessels = _mask_png(seg["drive"] / "test/1st_manual/01_manual1.gif")
    np.testing.assert_array_equal(sample["valid"].numpy(), fov)
    np.testing.assert_array_equal(sample["target"][0].numpy() > 0, vessels)
    assert sample["image"].shape == (3, 48, 48)


def test_native_resolution_batches_carry_the_stored_masks_and_field_of_view(seg) -> None:
    """``native_resolution``: evaluation samples hold the DRIVE masks and field of view as
    stored (48 px, the model sees 32), collated as lists beside the 32 px batch; training
    samples do not (their path is unchanged); every sample has its native size."""
    dm = SegmentationDataModule(
        str(seg["drive"] / "training"),
        test=str(seg["drive"] / "test"),
        layout="drive",
        split=(0.9, 0.1, 0.0),
        image_size=32,
        native_resolution=True,
        num_workers=0,
        batch_size=2,
    )
    dm.setup("fit")
    assert "native_target" not in dm.train_set[0] and dm.train_set[0]["size"].tolist() == [48, 48]
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["target"].shape == (2, 1, 32, 32) and batch["size"].tolist() == [[48, 48]] * 2
    for k, n in enumerate(("01", "02")):
        vessels = _mask_png(seg["drive"] / f"test/1st_manual/{n}_manual1.gif")
        fov = _mask_png(seg["drive"] / f"test/mask/{n}_test_mask.gif")
        assert batch["native_target"][k].dtype == torch.uint8
        np.testing.assert_array_equal(batch["native_target"][k][0].numpy() > 0, vessels)
        np.testing.assert_array_equal(batch["native_valid"][k].numpy(), fov)
    plain = SegmentationDataModule(
        str(seg["montgomery"]),
        layout="montgomery",
        image_size=32,
        native_resolution=True,
        num_workers=0,
    )
    plain.setup("fit")
    sample = plain.val_set[0]
    assert sample["native_valid"] is None and sample["native_target"].shape == (1, 48, 48)


def test_siim_layout_unions_rows_and_splits_by_dicom_patient(seg) -> None:
    dm = SegmentationDataModule(
        str(seg["siim"]),
        layout="siim",
        dicom_root=str(seg["siim"].parent),
        rle_encoding="relative",
        image_size=48,
        augment=False,
        num_workers=0,
    )
    parts = dm.prepare_tables()
    patients = [set(parts[p]["patient_id"]) for p in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    rows = list(csv.reader(open(seg["siim"])))[1:]
    by_image: dict[str, list[str]] = {}
    for image_id, rle in rows:
        by_image.setdefault(image_id, []).append(rle.strip())
    assert any(len(v) > 1 for v in by_image.values())  # positives are split over two rows
    dm.setup("fit")
    for ds in (dm.train_set, dm.val_set):
        for i in range(len(ds)):
            image_id = Path(ds.paths[i]).stem
            expected = np.zeros((48, 48), bool)
            for text in by_image[image_id]:
                expected |= rle_decode(text, (48, 48), "relative")
            np.testing.assert_array_equal(ds[i]["target"][0].numpy() > 0, expected)


def test_masks_stay_aligned_with_images_through_augmentation() -> None:
    """An asymmetric bright L-shape drawn in the image and marked in the mask: after every
    random flip, transposition, rotation and distortion the two still coincide."""
    image = np.zeros((64, 64, 3), np.float32)
    mask = np.zeros((64, 64, 1), np.uint8)
    image[8:56, 10:20] = 1.0
    image[46:56, 10:50] = 1.0
    mask[..., 0] = image[..., 0] > 0.5
    for recipe in ("fundus", "xray"):
        t = SegmentationTransform(64, recipe, train=True, seed=3)
        for _ in range(12):
            x, target, _ = t(image, mask, np.ones((64, 64), np.uint8))
            bright = x.float().mean(0) > 127.5  # 8 bits: the L-shape is the upper half
            m = target[0] > 0
            iou = (bright & m).sum() / (bright | m).sum()
            assert iou > 0.85, (recipe, float(iou))


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        pytest.param(
            "odd-rle",
            TableError,
            r"train-rle.csv, line 2, column 'EncodedPixels': .*odd",
            id="odd-rle",
        ),
        pytest.param(
            "past-end", TableError, r"line 2, column 'EncodedPixels': .*past the", id="rle-past-end"
        ),
        pytest.param(
            "no-dicom",
            TableError,
            r"train-rle.csv, line 2: no DICOM nothere.dcm",
            id="imageid-without-dicom",
        ),
        pytest.param(
            "unlisted", TableError, r"have no row in .*train-rle.csv", id="dicom-without-row"
        ),
    ],
)
def test_siim_bad_input(seg, tmp_path: Path, case: str, error: type, message: str) -> None:
    rows = list(csv.reader(open(seg["siim"])))
    if case == "odd-rle":
        rows[1][1] = " 1 2 3"
    elif case == "past-end":
        rows[1][1] = " 1 99999"
    elif case == "no-dicom":
        rows[1][0] = "nothere"
    else:
        rows = rows[:-1]
    table = tmp_path / "train-rle.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(error, match=message):
        read_siim(table, seg["siim"].parent, "relative")
    if case == "unlisted":  # chosen explicitly: a DICOM without a row is a negative
        assert len(read_siim(table, seg["siim"].parent, "relative", unlisted="negative")) == 24


def test_siim_partial_download_skipped_only_when_asked(seg, tmp_path: Path, caplog) -> None:
    """Two DICOMs of the table deleted (a partial download): the first missing one's line is an
    error naming the option; with ``skip_missing_images`` their rows are skipped and counted."""
    import logging
    import shutil

    root = tmp_path / "siim"
    shutil.copytree(seg["siim"].parent, root)
    table = root / "train-rle.csv"
    rows = list(csv.reader(open(table)))[1:]
    first = {}
    for line, (image_id, _) in enumerate(rows, start=2):
        first.setdefault(image_id, line)
    gone = sorted(first, key=first.__getitem__)[1:3]  # the 2nd and 3rd images of the table
    for image_id in gone:
        next(root.rglob(f"{image_id}.dcm")).unlink()
    kw = {"layout": "siim", "dicom_root": str(root), "rle_encoding": "relative"}
    line = first[gone[0]]
    with pytest.raises(
        TableError,
        match=rf"train-rle.csv, line {line}: no DICOM {gone[0]}.dcm .*skip_missing_images: true",
    ):
        SegmentationDataModule(str(table), **kw).prepare_tables()
    dm = SegmentationDataModule(str(table), skip_missing_images=True, **kw)
    with caplog.at_level(logging.WARNING):
        parts = dm.prepare_tables()
    skipped = sum(r[0] in gone for r in rows)
    assert sum(len(p) for p in parts.values()) == 22
    assert not any(Path(p).stem in gone for df in parts.values() for p in df["path"])
    assert f"skipped {skipped} row(s) of {len(rows)} (2 image(s)) whose DICOM is absent" in (
        caplog.text
    )
    assert f"first: line {line}, {gone[0]}.dcm" in caplog.text


def test_mask_of_another_size_and_missing_field_of_view(seg, tmp_path: Path) -> None:
    """A half-size mask: ``verify_images`` fails at setup naming both files and both sizes
    (``skip_bad_images`` drops its row, counted); without it, reading the sample fails the
    same way."""
    import shutil

    root = tmp_path / "mont"
    shutil.copytree(seg["montgomery"], root)
    victim = sorted((root / "ManualMask/leftMask").glob("*.png"))[0]
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(victim)  # half of 48 x 48
    image = root / "CXR_png" / victim.name
    message = rf"mask .*{victim} .* is 24x24 but its image {image} is 48x48"
    kw = {"layout": "montgomery", "image_size": 48, "num_workers": 0, "split": (0.4, 0.3, 0.3)}
    with pytest.raises(ImageDecodeError, match=message):
        SegmentationDataModule(str(root), verify_images=True, **kw).setup("fit")
    skipping = SegmentationDataModule(str(root), verify_images=True, skip_bad_images=True, **kw)
    skipping.setup("fit")
    sets = (skipping.train_set, skipping.val_set, *skipping.test_sets.values())
    assert sum(len(d) for d in sets) == 23 and not any(str(image) in d.paths for d in sets)
    dm = SegmentationDataModule(str(root), **kw)
    dm.setup("fit")
    (ds,) = [d for d in (dm.train_set, dm.val_set, *dm.test_sets.values()) if str(image) in d.paths]
    with pytest.raises(ImageDecodeError, match=message):
        ds[ds.paths.index(str(image))]
    drive = tmp_path / "drive"
    shutil.copytree(seg["drive"], drive)
    (drive / "training/mask/21_training_mask.gif").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"DRIVE image 21_training.tif: .*21_training_mask.gif not found"
    ):
        SegmentationDataModule(str(drive / "training"), layout="drive").prepare_tables()


def test_siim_needs_its_encoding_chosen(seg) -> None:
    with pytest.raises(ValueError, match="rle_encoding"):
        SegmentationDataModule(str(seg["siim"]), layout="siim", dicom_root=str(seg["siim"].parent))


def test_seg_demo_config_learns(tmp_path: Path) -> None:
    """`medxfer fit -c configs/seg_demo.yaml` on its synthetic data (in a folder of its own):
    Dice on the test split well above chance, per subgroup too."""
    data = tmp_path / "data/synthetic"
    write_synthetic_montgomery(data / "montgomery", 40, size=64, seed=0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "medxfer",
            "fit",
            "-c",
            str(REPO / "configs/seg_demo.yaml"),
            "--trainer.max_epochs=6",
            "--data.init_args.num_workers=0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = tmp_path.glob("runs/**/results.json")
    values = json.loads(results.read_text())
    assert values["test/montgomery/dice_mean"] >= 0.8
    convergence = json.loads(
        (results.parent / artifacts.ANALYSIS_DIR / artifacts.CONVERGENCE_JSON).read_text()
    )
    assert convergence["monitor"] == "val/dice_mean" and convergence["epoch_at_fraction"] >= 0
    torch.testing.assert_close(
        torch.tensor(values["test/montgomery/dice/lung"]),
        torch.tensor(values["test/montgomery/dice_mean"]),
    )
    # Dice per subgroup (the test split's sexes), and pixel ECE, in results.json / results.md
    subgroups = json.loads(
        (results.parent / artifacts.ANALYSIS_DIR / "subgroups_test_montgomery.json").read_text()
    )["attributes"]
    sexes = subgroups["sex"]["values"]
    assert sexes and all(values[f"test/montgomery/subgroup/sex/{g}"] >= 0.7 for g in sexes)
    assert 0 <= values["test/montgomery/ece"] <= 1
    md = (results.parent / artifacts.RESULTS_MD).read_text()
    assert "| montgomery | sex |" in md and "| ece |" in md
    # and one row per group: its images and Dice, as in the subgroup file of the same run
    for attr, rep in subgroups.items():
        for g, n in rep["sizes"].items():
            if g in rep["too_small"]:
                value = "too small"
            elif g in rep["unknown"]:  # an unknown age or sex: scored apart from the gap
                value = f"{rep['unknown'][g]:.4f} (apart)"
            else:
                value = f"{rep['values'][g]:.4f}"
            assert f"| montgomery | {attr} | {g} | {n} | {value} |" in md.splitlines()


def test_montgomery_sex_through_the_project_list(tmp_path: Path) -> None:
    """A reading's `O` is outside the documented sex list: an error naming the image (as for
    every other dataset), or `Unknown` when `unknown_sex` asks for it."""
    root = write_synthetic_montgomery(tmp_path / "mont", 8, size=32, seed=0)
    reading = sorted((root / "ClinicalReadings").glob("*.txt"))[0]
    text = reading.read_text()
    reading.write_text(text.replace("Sex: F", "Sex: O").replace("Sex: M", "Sex: O"))
    kw = dict(layout="montgomery", image_size=32, augment=False, num_workers=0)
    with pytest.raises(TableError, match=f"{reading.stem}.png.*Patient's Sex.*'O'"):
        SegmentationDataModule(str(root), **kw).setup("fit")
    table = SegmentationDataModule(str(root), unknown_sex=True, **kw).read_table(str(root))
    sex = dict(zip(table["path"].map(lambda p: Path(p).stem), table["sex"], strict=True))
    assert sex.pop(reading.stem) == "Unknown"
    assert set(sex.values()) <= {"Female", "Male"}
