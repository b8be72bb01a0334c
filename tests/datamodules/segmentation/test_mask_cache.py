"""Masks and field of view through the HDF5 cache (nearest-neighbour, exact), and mask files
whose values are not the declared classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from medxfer.data.cache import CacheError
from medxfer.data.images import ImageDecodeError
from medxfer.datamodules.segmentation import (
    SegmentationDataModule,
    read_mask,
    write_synthetic_montgomery,
)

REPO = Path(__file__).resolve().parents[3]


def _options(layout: str, seg: dict[str, Path]) -> tuple[str, dict]:
    """The training data and settings of each layout (40 px: every image is resized)."""
    kw: dict = dict(image_size=40, augment=False, num_workers=0, layout=layout)
    if layout == "drive":
        return str(seg["drive"] / "training"), {
            **kw,
            "test": str(seg["drive"] / "test"),
            "split": (0.7, 0.3, 0.0),
        }
    if layout == "siim":
        return str(seg["siim"]), {
            **kw,
            "dicom_root": str(seg["siim"].parent),
            "rle_encoding": "relative",
        }
    return str(seg["montgomery"]), {**kw, "lungs": "left_right"}


@pytest.mark.parametrize("layout", ["montgomery", "drive", "siim"])
def test_cache_gives_the_direct_paths_masks_exactly(layout: str, seg, tmp_path: Path) -> None:
    """Resized masks, field of view and images equal; so do the native size and, in the
    evaluation sets (``native_resolution``), the native masks the cache does not store."""
    train, kw = _options(layout, seg)
    kw["native_resolution"] = True
    direct = SegmentationDataModule(train, **kw)
    direct.setup("fit")
    report = SegmentationDataModule(train, **kw).build_cache(tmp_path / "c.h5", progress=False)
    assert report.written == report.total and not report.bad
    cached = SegmentationDataModule(train, cache=str(tmp_path / "c.h5"), **kw)
    cached.setup("fit")
    pairs = [(direct.train_set, cached.train_set), (direct.val_set, cached.val_set)]
    pairs += [(direct.test_sets[k], cached.test_sets[k]) for k in direct.test_sets]
    n = 0
    for a, b in pairs:
        assert a.paths == b.paths
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert torch.equal(x["target"], y["target"]) and torch.equal(x["valid"], y["valid"])
            assert set(torch.unique(y["target"]).tolist()) <= {0.0, 1.0}  # the declared classes
            # the transform rounds the decoded image to 8 bits as the cache stores it
            assert x["image"].dtype == torch.uint8 and torch.equal(x["image"], y["image"])
            assert x["size"].tolist() == y["size"].tolist() == [48, 48]
            if a is not direct.train_set:
                assert torch.equal(x["native_target"], y["native_target"])
                assert x["native_target"].shape == (2 if layout == "montgomery" else 1, 48, 48)
                if layout == "drive":
                    assert torch.equal(x["native_valid"], y["native_valid"])
                else:  # no field of view: none carried
                    assert x["native_valid"] is None and y["native_valid"] is None
            n += 1
    assert n == report.total
    if layout == "drive":  # the field of view came through the cache, and is not everything
        assert not all(bool(b[i]["valid"].all()) for b in (cached.train_set,) for i in range(3))


def test_cached_masks_are_nearest_neighbour_of_the_files(seg, tmp_path: Path) -> None:
    """Independent reference: the mask PNG resized by OpenCV's nearest neighbour."""
    train, kw = _options("montgomery", seg)
    dm = SegmentationDataModule(train, **kw)
    dm.build_cache(tmp_path / "c.h5", progress=False)
    dm = SegmentationDataModule(train, cache=str(tmp_path / "c.h5"), **kw)
    dm.setup("fit")
    path = dm.train_set.paths[0]
    name = Path(path).name
    for k, side in enumerate(("leftMask", "rightMask")):
        png = np.asarray(Image.open(seg["montgomery"] / "ManualMask" / side / name))
        expected = cv2.resize(png, (40, 40), interpolation=cv2.INTER_NEAREST) == 255
        np.testing.assert_array_equal(dm.train_set[0]["target"][k].numpy() == 1, expected)


def test_a_cache_of_other_masks_is_refused(seg, tmp_path: Path) -> None:
    train, kw = _options("montgomery", seg)
    SegmentationDataModule(train, **kw).build_cache(tmp_path / "c.h5", progress=False)
    union = SegmentationDataModule(train, cache=str(tmp_path / "c.h5"), **{**kw, "lungs": "union"})
    with pytest.raises(CacheError, match=r"built with other settings.*label_channels"):
        union.setup("fit")


def _copy_with_bad_mask(src: Path, dst: Path, values: tuple[int, ...]) -> Path:
    """A Montgomery copy whose first left-lung mask holds ``values`` besides 0 / 255."""
    shutil.copytree(src, dst)
    victim = sorted((dst / "ManualMask/leftMask").glob("*.png"))[0]
    pixels = np.asarray(Image.open(victim)).copy()
    for k, v in enumerate(values):
        pixels[k, :3] = v
    Image.fromarray(pixels).save(victim)
    return victim


@pytest.mark.parametrize(
    ("values", "declared", "shown"),
    [
        pytest.param((128,), (0, 255), "128", id="128-in-a-0-255-mask"),
        pytest.param((3, 7), (0, 255), "3, 7", id="3-and-7-in-a-0-255-mask"),
        pytest.param((1,), (0, 255), "1", id="a-0-1-value-in-a-0-255-mask"),
    ],
)
def test_mask_values_outside_the_declared_classes_name_file_and_values(
    seg, tmp_path: Path, values: tuple[int, ...], declared: tuple[int, int], shown: str
) -> None:
    root = tmp_path / "mont"
    victim = _copy_with_bad_mask(seg["montgomery"], root, values)
    with pytest.raises(ImageDecodeError, match=rf"{victim.name} .*value\(s\) {shown} outside"):
        read_mask(str(victim), declared, "line 1 of x")
    kw = dict(layout="montgomery", image_size=40, num_workers=0, split=(0.4, 0.3, 0.3))
    dm = SegmentationDataModule(str(root), mask_values=declared, **kw)
    dm.setup("fit")
    path = str(root / "CXR_png" / victim.name)
    (ds,) = [d for d in (dm.train_set, dm.val_set, *dm.test_sets.values()) if path in d.paths]
    with pytest.raises(ImageDecodeError, match=rf"mask .*{victim.name} .*{shown} outside"):
        ds[ds.paths.index(path)]
    with pytest.raises(ImageDecodeError, match=rf"{victim.name} .*{shown} outside"):
        SegmentationDataModule(str(root), mask_values=declared, **kw).build_cache(
            tmp_path / "c.h5", progress=False
        )


def test_zero_one_masks_read_when_declared(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    pixels = np.zeros((5, 6), np.uint8)
    pixels[1:3, 2:5] = 1
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(read_mask(str(path), (0, 1)), pixels == 1)
    pixels[4, 0] = 3  # a class 3 in a binary 0 / 1 mask
    Image.fromarray(pixels).save(path)
    with pytest.raises(ImageDecodeError, match=r"m.png .*value\(s\) 3 outside"):
        read_mask(str(path), (0, 1))


@pytest.mark.slow
def test_prepare_then_fit_reads_masks_from_the_cache(tmp_path: Path) -> None:
    """`medxfer prepare -c configs/seg_demo.yaml`, then the files are spoiled (images unreadable,
    masks with a value outside the classes): `medxfer fit` with the cache still trains and
    tests, so images and masks came from the cache."""
    data = tmp_path / "data/synthetic"
    write_synthetic_montgomery(data / "montgomery", 16, size=48, seed=0)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cache = tmp_path / "cache/seg.h5"

    def medxfer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "medxfer", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )

    config = str(REPO / "configs/seg_demo.yaml")
    out = medxfer("prepare", "-c", config, str(cache), "--workers", "0", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "16 images, 16 written" in out.stdout
    for png in (data / "montgomery/CXR_png").glob("*.png"):
        png.write_bytes(b"not a png")
    for png in (data / "montgomery/ManualMask/leftMask").glob("*.png"):
        Image.fromarray(np.full((48, 48), 7, np.uint8)).save(png)
    out = medxfer(
        "fit",
        "-c",
        config,
        f"--data.init_args.cache={cache}",
        "--data.init_args.num_workers=0",
        "--trainer.max_epochs=1",
        "--trainer.max_steps=2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = tmp_path.glob("runs/**/results.json")
    assert "test/montgomery/dice_mean" in json.loads(results.read_text())
