"""Dice and IoU against an independent NumPy computation: per image and over the set, with and
without a field of view, empty masks both ways, multi-class, and split updates (what a DDP
all-reduce of the sum states does) equal to one update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer.metrics.segmentation import SegmentationMetrics, dice_iou


def numpy_scores(
    pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Per-class mean-over-images and global Dice / IoU of bool (B, K, H, W) masks."""
    if valid is not None:
        pred, true = pred & valid[:, None], true & valid[:, None]
    per_dice, per_iou = [], []
    for p, t in zip(pred, true, strict=True):
        d, j = [], []
        for pk, tk in zip(p, t, strict=True):
            inter, total, union = (pk & tk).sum(), pk.sum() + tk.sum(), (pk | tk).sum()
            d.append(1.0 if total == 0 else 2 * inter / total)
            j.append(1.0 if union == 0 else inter / union)
        per_dice.append(d)
        per_iou.append(j)
    inter = (pred & true).sum((0, 2, 3))
    total = pred.sum((0, 2, 3)) + true.sum((0, 2, 3))
    union = (pred | true).sum((0, 2, 3))
    return {
        "dice": np.mean(per_dice, 0),
        "iou": np.mean(per_iou, 0),
        "dice_global": np.where(total > 0, 2 * inter / np.maximum(total, 1), np.nan),
        "iou_global": np.where(union > 0, inter / np.maximum(union, 1), np.nan),
    }


@pytest.mark.parametrize(
    "with_fov", [pytest.param(False, id="all-pixels"), pytest.param(True, id="field-of-view")]
)
def test_binary_dice_iou_against_numpy(with_fov: bool) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((6, 2, 12, 12)).astype(np.float32)
    true = rng.random((6, 2, 12, 12)) < 0.3
    true[0] = False  # empty truth
    probs[0, 0] = 0.1  # ... and empty prediction in class 0: scores 1
    probs[1, 1] = 0.9  # full prediction, truth present
    valid = rng.random((6, 12, 12)) < 0.7 if with_fov else None
    got = dice_iou(
        torch.from_numpy(probs),
        torch.from_numpy(true.astype(np.float32)),
        torch.from_numpy(valid) if valid is not None else None,
    )
    want = numpy_scores(probs >= 0.5, true, valid)
    for key, value in want.items():
        np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-6, err_msg=key)


def test_multiclass_uses_the_argmax_class() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random((4, 3, 10, 10)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 10, 10))
    got = dice_iou(torch.from_numpy(probs), torch.from_numpy(labels), multiclass=True)
    pred = np.stack([probs.argmax(1) == k for k in range(3)], 1)
    true = np.stack([labels == k for k in range(3)], 1)
    np.testing.assert_allclose(
        got["dice"].numpy(), numpy_scores(pred, true, None)["dice"], rtol=1e-6
    )


def test_empty_prediction_on_present_truth_scores_zero_and_global_nan_when_never_present() -> None:
    probs = torch.zeros(2, 1, 4, 4)
    true = torch.zeros(2, 1, 4, 4)
    true[0, 0, 1, 1] = 1
    got = dice_iou(probs, true)
    assert got["dice"].item() == pytest.approx(0.5)  # image 0: 0, image 1: both empty -> 1
    none = dice_iou(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    assert none["dice"].item() == 1.0 and torch.isnan(none["dice_global"]).all()


def test_split_updates_equal_one_update() -> None:
    """The states are sums: two ranks' halves, merged as DDP's all-reduce does, give the
    single-process values to 1e-6."""
    rng = np.random.default_rng(2)
    probs = torch.from_numpy(rng.random((10, 2, 9, 9)).astype(np.float32))
    true = torch.from_numpy((rng.random((10, 2, 9, 9)) < 0.4).astype(np.float32))
    valid = torch.from_numpy(rng.random((10, 9, 9)) < 0.8)
    whole = SegmentationMetrics(["a", "b"])
    whole.update(probs, true, valid)
    rank0, rank1 = SegmentationMetrics(["a", "b"]), SegmentationMetrics(["a", "b"])
    rank0.update(probs[:3], true[:3], valid[:3])
    rank1.update(probs[3:], true[3:], valid[3:])
    rank0.merge_state(rank1)
    a, b = whole.compute(), rank0.compute()
    assert set(a) == set(b) and {"dice/a", "iou/b", "dice_mean"} <= set(a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
