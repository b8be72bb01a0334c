"""The chest X-ray augmentation: 8-bit output, determinism from the seed, evaluation path, the
brightness / contrast step on the [-1, 1] scale against a hand computation."""

from __future__ import annotations

import numpy as np
import torch

from medxfer.datamodules.chest_xray import GreyImageTransform


def test_train_transform_is_seeded_and_in_range() -> None:
    img = np.random.default_rng(0).random((50, 50), dtype=np.float32)
    a = [GreyImageTransform(32, train=True, seed=5)(img) for _ in range(1)]
    t1, t2 = GreyImageTransform(32, train=True, seed=5), GreyImageTransform(32, train=True, seed=5)
    outs1, outs2 = [t1(img) for _ in range(4)], [t2(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs1, outs2, strict=True))
    assert not torch.equal(outs1[0], outs1[1])  # draws differ from call to call
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.uint8


def test_eval_transform_keeps_black_and_white_as_8_bit_extremes() -> None:
    img = np.zeros((64, 64), np.float32)
    img[:, 32:] = 1.0
    out = GreyImageTransform(32, resize=32, train=False, channels=1)(img)
    assert out.shape == (1, 32, 32) and out.dtype == torch.uint8
    assert out[0, :, :15].eq(0).all() and out[0, :, 17:].eq(255).all()


def test_contrast_is_applied_on_the_minus_one_one_scale_and_rounded() -> None:
    """No geometry (no rotation, no crop, no flip), no brightness, a fixed contrast of 1.3:
    the output is ``clip((2x - 1) * 1.3, -1, 1)`` back on [0, 1], rounded to 8 bits."""
    img = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    t = GreyImageTransform(
        32, resize=32, train=True, rotate=0, brightness=0.0, contrast=(1.3, 1.3), hflip=False
    )
    out = t(img)
    level = np.rint(img * 255) / 255  # the 8-bit image the value step starts from
    expected = np.rint((np.clip((2 * level - 1) * 1.3, -1, 1) + 1) / 2 * 255)
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out[0].numpy(), expected.astype(np.uint8))
