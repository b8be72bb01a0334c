"""The chest X-ray augmentation: output range, determinism from the seed, evaluation path."""

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
    assert a[0].shape == (3, 32, 32) and a[0].min() >= -1 and a[0].max() <= 1


def test_eval_transform_scales_to_minus_one_one() -> None:
    img = np.zeros((64, 64), np.float32)
    img[:, 32:] = 1.0
    out = GreyImageTransform(32, resize=32, train=False, channels=1)(img)
    assert out.shape == (1, 32, 32)
    assert out[0, :, :15].eq(-1).all() and out[0, :, 17:].eq(1).all()
