"""The transforms' shared preamble: 8-bit output (float16 for mammograms) of the right shape,
the evaluation path against a hand computation (OpenCV resize, rounding, crop), the files and
the cache's 8-bit pixels giving the same output, the dataset's empty slots in the transform's
dtype, and the declared protocol the dataset relies on."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from medxfer.datamodules import ImageTableDataset
from medxfer.datamodules.chest_xray import GreyImageTransform
from medxfer.datamodules.dermatology.transforms import ColorImageTransform
from medxfer.datamodules.mammography.transforms import MammogramTransform
from medxfer.datamodules.segmentation.transforms import SegmentationTransform
from medxfer.transforms import DatasetTransform, ImageTransform, sample_key

RNG = np.random.default_rng(0)
GREY = RNG.random((50, 60), dtype=np.float32)
COLOUR = RNG.random((50, 60, 3), dtype=np.float32)


def _cases() -> list[Any]:
    return [
        pytest.param(ImageTransform, {}, GREY, 3, torch.uint8, id="generic-grey"),
        pytest.param(ImageTransform, {}, COLOUR, 3, torch.uint8, id="generic-colour"),
        pytest.param(ImageTransform, {"channels": 1}, GREY, 1, torch.uint8, id="generic-1ch"),
        pytest.param(GreyImageTransform, {}, GREY, 3, torch.uint8, id="chest-xray"),
        pytest.param(ColorImageTransform, {}, COLOUR, 3, torch.uint8, id="dermatology"),
        pytest.param(MammogramTransform, {}, GREY, 3, torch.float16, id="mammography"),
    ]


@pytest.mark.parametrize("train", [pytest.param(True, id="train"), pytest.param(False, id="eval")])
@pytest.mark.parametrize(("cls", "kw", "image", "channels", "dtype"), _cases())
def test_transforms_hand_out_8_bits_or_float16_of_the_right_shape(
    cls: type, kw: dict, image: np.ndarray, channels: int, dtype: torch.dtype, train: bool
) -> None:
    t = cls(24, train=train, **kw)
    out = t(image)
    assert out.shape == (channels, 24, 24) and out.dtype == dtype == t.dtype
    if dtype == torch.float16:  # [0, 1], not normalised
        assert out.min() >= 0 and out.max() <= 1
    assert isinstance(t, DatasetTransform)


@pytest.mark.parametrize("train", [pytest.param(True, id="train"), pytest.param(False, id="eval")])
@pytest.mark.parametrize("recipe", ["xray", "fundus"])
def test_segmentation_transform_gives_8_bit_images_and_exact_masks(
    recipe: str, train: bool
) -> None:
    image = COLOUR if recipe == "fundus" else GREY
    masks = (RNG.random((50, 60, 2)) > 0.5).astype(np.uint8)
    valid = np.ones((50, 60), np.uint8)
    t = SegmentationTransform(32, recipe, train=train)  # type: ignore[arg-type]
    x, target, fov = t(image, masks, valid)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert target.shape == (2, 32, 32) and set(target.unique().tolist()) <= {0.0, 1.0}
    assert fov.shape == (32, 32) and fov.dtype == torch.bool
    if not train:  # nearest neighbour: class values stay exact, the same as OpenCV's
        expected = cv2.resize(masks, (32, 32), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(target.numpy().transpose(1, 2, 0), expected)


def test_evaluation_path_is_the_rounded_area_resize_then_the_centre_crop() -> None:
    out = ImageTransform(32, resize=40, train=False)(GREY)
    small = cv2.resize(GREY, (40, 40), interpolation=cv2.INTER_AREA)
    expected = np.rint(np.clip(small, 0, 1) * 255).astype(np.uint8)[4:36, 4:36]
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), expected)


@pytest.mark.parametrize(
    ("make", "image"),
    [
        pytest.param(lambda: GreyImageTransform(32, train=True, seed=3), GREY, id="chest-xray"),
        pytest.param(lambda: ColorImageTransform(32, train=True, seed=3), COLOUR, id="derm"),
        pytest.param(lambda: ImageTransform(32, train=False), COLOUR, id="generic-eval"),
    ],
)
def test_a_cached_8_bit_image_gives_the_files_pixels(make, image: np.ndarray) -> None:
    """What an 8-bit cache stores (the area resize to the first side, rounded) gives the same
    output as the decoded float image, augmentation included (same sample key)."""
    t_files, t_cache = make(), make()
    side = t_files.resize
    cached = np.rint(
        np.clip(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA), 0, 1) * 255
    )
    for key in range(3):
        with sample_key(key):
            a = t_files(image)
        with sample_key(key):
            b = t_cache(cached.astype(np.uint8))
        assert a.dtype == b.dtype == torch.uint8
        assert torch.equal(a, b)  # the transform rounds the resized floats as the cache does


class _Arrays:
    """An image source serving arrays by path (no files)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def __call__(self, path: str, context: str = "") -> np.ndarray:
        return self.arrays[path]

    def check(self, path: str, context: str = "", decode: bool = False) -> None:
        pass


@pytest.mark.parametrize(
    ("transform", "dtype"),
    [
        pytest.param(GreyImageTransform(16, resize=16), torch.uint8, id="uint8"),
        pytest.param(MammogramTransform(16), torch.float16, id="mammography-float16"),
    ],
)
def test_empty_slots_of_a_case_have_the_transforms_dtype(
    transform: DatasetTransform, dtype: torch.dtype
) -> None:
    table = pd.DataFrame(
        {
            "id": ["e1"],
            "line": [2],
            "source": ["exams.csv"],
            "paths": [["a", "", "b", ""]],
            "mask": [[True, False, True, False]],
        }
    )
    images = _Arrays({"a": np.full((16, 16), 1.0, np.float32), "b": GREY[:16, :16]})
    ds = ImageTableDataset(table, np.zeros((1, 2)), transform, {}, images, views=4)
    image = ds[0]["image"]
    assert image.shape == (4, 3, 16, 16) and image.dtype == dtype
    assert image[1].eq(0).all() and image[3].eq(0).all()
    assert image[0].float().min() == (255 if dtype == torch.uint8 else 1)  # white slot
