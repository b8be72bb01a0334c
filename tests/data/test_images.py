"""What the image readers refuse rather than convert silently (issue 25): an image with a side
under 8 pixels, transparent pixels and CMYK, each naming the file and its table line; an opaque
alpha channel (21 of the real NIH subset's PNGs) is read exactly as its RGB copy; masks are
read as stored whatever their container."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medxfer.data.checks import check_images
from medxfer.data.images import (
    MIN_SIDE,
    ImageDecodeError,
    read_grey_image,
    read_label_image,
    read_rgb_image,
)

CONTEXT = "line 7 of t.csv"


def _rgba(path: Path, transparent: int = 0) -> np.ndarray:
    """A 16 x 12 RGBA PNG with distinct colours, its first ``transparent`` pixels alpha 0."""
    rgba = np.random.default_rng(0).integers(0, 256, (12, 16, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    rgba.reshape(-1, 4)[:transparent, 3] = 0
    Image.fromarray(rgba, "RGBA").save(path)
    return rgba


@pytest.mark.parametrize("reader", [read_grey_image, read_rgb_image], ids=["grey", "rgb"])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 40), (40, 7)])
def test_images_with_a_side_under_8_pixels_are_refused(
    tmp_path: Path, reader, width: int, height: int
) -> None:
    Image.new("L", (width, height), 90).save(tmp_path / "small.png")
    with pytest.raises(ImageDecodeError) as err:
        reader(tmp_path / "small.png", CONTEXT)
    assert str(err.value) == (
        f"image {tmp_path / 'small.png'} ({CONTEXT}) is {width}x{height} pixels, under the "
        "8-pixel minimum side (a placeholder or a damaged export?)"
    )


def test_an_8_pixel_image_and_a_tiny_mask_are_read(tmp_path: Path) -> None:
    assert MIN_SIDE == 8
    Image.new("L", (8, 8), 51).save(tmp_path / "eight.png")
    np.testing.assert_allclose(read_grey_image(tmp_path / "eight.png"), np.full((8, 8), 0.2))
    Image.new("L", (3, 2), 1).save(tmp_path / "mask.png")  # masks: checked against their image
    assert read_label_image(tmp_path / "mask.png").tolist() == [[1, 1, 1], [1, 1, 1]]


def test_an_opaque_alpha_channel_is_read_as_its_rgb(tmp_path: Path) -> None:
    rgba = _rgba(tmp_path / "opaque.png")
    rgb = rgba[..., :3].astype(np.float32)
    np.testing.assert_allclose(read_rgb_image(tmp_path / "opaque.png"), rgb / 255, atol=1e-7)
    luminance = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255  # ITU-R 601
    np.testing.assert_allclose(read_grey_image(tmp_path / "opaque.png"), luminance, atol=1e-6)


@pytest.mark.parametrize("reader", [read_grey_image, read_rgb_image], ids=["grey", "rgb"])
def test_transparent_pixels_are_refused_naming_the_file_and_the_count(
    tmp_path: Path, reader
) -> None:
    _rgba(tmp_path / "rgba.png", transparent=5)
    la = np.full((10, 10, 2), 255, np.uint8)
    la[:2, :3, 1] = 128  # 6 half-transparent pixels of 100
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    for name, shown in [
        ("rgba.png", "5 transparent pixel(s) of 192 (mode RGBA)"),
        ("la.png", "6 transparent pixel(s) of 100 (mode LA)"),
    ]:
        with pytest.raises(ImageDecodeError) as err:
            reader(tmp_path / name, CONTEXT)
        assert str(err.value).startswith(f"image {tmp_path / name} ({CONTEXT}) has {shown}: ")
    # a mask's container says nothing about its classes: read as stored
    assert read_label_image(tmp_path / "rgba.png").shape == (12, 16)


@pytest.mark.parametrize("reader", [read_grey_image, read_rgb_image], ids=["grey", "rgb"])
def test_cmyk_images_are_refused(tmp_path: Path, reader) -> None:
    Image.new("CMYK", (16, 16), (0, 0, 0, 128)).save(tmp_path / "print.jpg")
    with pytest.raises(ImageDecodeError) as err:
        reader(tmp_path / "print.jpg", CONTEXT)
    assert str(err.value).startswith(
        f"image {tmp_path / 'print.jpg'} ({CONTEXT}) is CMYK (a print colour space)"
    )


def test_refused_images_are_skipped_and_counted_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.new("L", (32, 32), 90).save(tmp_path / "good.png")
    Image.new("L", (1, 1), 90).save(tmp_path / "dot.png")
    Image.new("CMYK", (32, 32)).save(tmp_path / "print.jpg")
    table = pd.DataFrame(
        {
            "path": [str(tmp_path / n) for n in ("good.png", "dot.png", "print.jpg")],
            "line": [2, 3, 4],
            "source": "t.csv",
        }
    )
    with pytest.raises(
        ImageDecodeError, match=r"2 bad image\(s\); first: image .*dot\.png \(line 3"
    ):
        check_images(table, skip_bad=False, decode=True, what="train")
    with caplog.at_level(logging.WARNING, logger="medxfer.data.checks"):
        kept = check_images(table, skip_bad=True, decode=True, what="train")
    assert kept["line"].tolist() == [2]
    assert "train: skipped 2 row(s) of 3 with a bad image" in caplog.text
