"""Dice and IoU of segmentation masks, per class, exact under DDP.

Two averages, both with sum states only (a tiny all-reduce, the same on 1 or N ranks):

* ``dice`` / ``iou`` -- the mean over images of each image's score (an image where prediction
  and truth are both empty scores 1, the SIIM-ACR convention), as the transfer-learning
  segmentation benchmarks report;
* ``dice_global`` / ``iou_global`` -- over all pixels of the set at once.

Pixels outside ``valid`` (a field of view, an ignore region) count for nothing. Binary /
multi-label masks are thresholded probabilities (``(B, K, H, W)`` targets); multi-class masks the
arg-max class (``(B, H, W)`` integer targets, one-hot internally).

Two helpers feed the analyses that take one row per case or per sample: :func:`case_dice`, each
image's Dice per class (subgroup gaps in Dice), and :func:`sample_pixels`, a fixed-size random
subsample of each image's valid pixels seeded by its case id, so the pixel set -- and the pixel
ECE computed on it -- is the same on 1 or N ranks and in any batch order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from .classification import metric_key

__all__ = ["SegmentationMetrics", "case_dice", "dice_iou", "sample_pixels"]


def _one_hot_masks(
    probs: torch.Tensor, target: torch.Tensor, multiclass: bool, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true masks as bool ``(B, K, H, W)``."""
    if multiclass:
        k = probs.shape[1]
        pred = torch.nn.functional.one_hot(probs.argmax(1), k).permute(0, 3, 1, 2).bool()
        if target.ndim == 4:
            target = target.argmax(1)
        true = torch.nn.functional.one_hot(target.long(), k).permute(0, 3, 1, 2).bool()
    else:
        pred, true = probs >= threshold, target > 0.5
    return pred, true


def _case_scores(
    probs: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    multiclass: bool,
    threshold: float,
) -> dict[str, torch.Tensor]:
    """Per image and class ``(B, K)``: Dice, IoU, intersection, predicted and true pixels."""
    pred, true = _one_hot_masks(probs, target, multiclass, threshold)
    if valid is not None:
        v = valid.bool()[:, None]
        pred, true = pred & v, true & v
    inter = (pred & true).sum((2, 3)).double()  # (B, K)
    p, t = pred.sum((2, 3)).double(), true.sum((2, 3)).double()
    union = p + t - inter
    empty = (p + t) == 0
    dice = torch.where(empty, 1.0, 2 * inter / (p + t).clamp(min=1))
    iou = torch.where(empty, 1.0, inter / union.clamp(min=1))
    return {"dice": dice, "iou": iou, "inter": inter, "pred": p, "true": t}


def case_dice(
    probs: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    multiclass: bool = False,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Each image's Dice per class ``(B, K)`` (1 where prediction and truth are both empty);
    arguments as in :func:`dice_iou`, whose ``dice`` is the mean of these over images."""
    return _case_scores(probs, target, valid, multiclass, threshold)["dice"].float()


def _update(
    probs: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    multiclass: bool,
    threshold: float,
) -> dict[str, torch.Tensor]:
    """Per-class sums of one batch: per-image Dice / IoU, image count, global counts."""
    s = _case_scores(probs, target, valid, multiclass, threshold)
    dice, iou, inter, p, t = s["dice"], s["iou"], s["inter"], s["pred"], s["true"]
    return {
        "dice_sum": dice.sum(0),
        "iou_sum": iou.sum(0),
        "images": torch.tensor(float(len(probs)), dtype=torch.double, device=probs.device),
        "inter": inter.sum(0),
        "pred": p.sum(0),
        "true": t.sum(0),
    }


def _compute(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-class scores ``(K,)`` from the summed states (NaN where a class never appears)."""
    both = s["pred"] + s["true"]
    return {
        "dice": s["dice_sum"] / s["images"],
        "iou": s["iou_sum"] / s["images"],
        "dice_global": torch.where(both > 0, 2 * s["inter"] / both, torch.nan),
        "iou_global": torch.where(both > 0, s["inter"] / (both - s["inter"]), torch.nan),
    }


def dice_iou(
    probs: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    multiclass: bool = False,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Per-class Dice and IoU of one set of masks.

    Args:
        probs: ``(B, K, H, W)`` probabilities (sigmoid, or softmax when ``multiclass``).
        target: ``(B, K, H, W)`` 0/1 masks, or ``(B, H, W)`` class indices when ``multiclass``.
        valid: ``(B, H, W)`` pixels that count (field of view); default all.
        multiclass: score the arg-max class instead of thresholded probabilities.
        threshold: probability from which a pixel is predicted positive.

    Returns:
        ``dice``, ``iou`` (mean over images), ``dice_global``, ``iou_global``, each ``(K,)``.
    """
    return {
        k: v.float()
        for k, v in _compute(_update(probs, target, valid, multiclass, threshold)).items()
    }


def sample_pixels(
    probs: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    ids: Sequence[str],
    per_image: int,
    seed: int = 0,
    multiclass: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-size random subsample of each image's valid pixels, as rows: the input of a pixel
    calibration (ECE) that costs the same at any resolution.

    Each image contributes ``per_image`` pixels drawn without replacement from its valid ones
    (all of them when it has fewer), by a generator seeded from ``seed`` and the image's case id:
    the same pixels whatever the batch, its order or the number of DDP ranks.

    Args:
        probs: ``(B, K, H, W)`` probabilities.
        target: ``(B, K, H, W)`` 0/1 masks, or ``(B, H, W)`` class indices when ``multiclass``.
        valid: ``(B, H, W)`` pixels that count (field of view); default all.
        ids: the B case ids.
        per_image: pixels drawn per image.
        seed: base seed of the draws.
        multiclass: targets are class indices.

    Returns:
        probabilities ``(M, K)`` and targets ``(M, K)`` (``(M,)`` class indices when
        ``multiclass``) of the M drawn pixels.
    """
    b, k = probs.shape[:2]
    if len(ids) != b:
        raise ValueError(f"{len(ids)} case ids for {b} images")
    flat_probs = probs.detach().flatten(2).transpose(1, 2)  # (B, HW, K)
    flat_target = target.detach().flatten(2 if not multiclass else 1)
    if not multiclass:
        flat_target = flat_target.transpose(1, 2)  # (B, HW, K)
    flat_valid = (
        valid.detach().bool().flatten(1).cpu()
        if valid is not None
        else torch.ones(b, flat_probs.shape[1], dtype=torch.bool)
    )
    rows_p, rows_t = [], []
    for i, case in enumerate(ids):
        where = torch.nonzero(flat_valid[i]).flatten()
        if len(where) > per_image:
            g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{case}".encode()))
            where = where[torch.randperm(len(where), generator=g)[:per_image]]
        where = where.to(probs.device)
        rows_p.append(flat_probs[i, where])
        rows_t.append(flat_target[i, where])
    return torch.cat(rows_p).reshape(-1, k), torch.cat(rows_t)


class SegmentationMetrics(Metric):
    """Dice and IoU per class with sum states; ``compute()`` -> ``{"dice_mean", "iou_mean",
    "dice_global_mean", "dice/<class>", "iou/<class>", ...}``.

    Args:
        class_names: names of the K output channels.
        multiclass: masks are one class per pixel (softmax) rather than independent (sigmoid).
        threshold: probability from which a pixel is positive (binary / multi-label).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        class_names: Sequence[str],
        multiclass: bool = False,
        threshold: float = 0.5,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.class_names = list(class_names)
        self.multiclass = multiclass
        self.threshold = threshold
        k = len(self.class_names)
        for name in ("dice_sum", "iou_sum", "inter", "pred", "true"):
            self.add_state(name, default=torch.zeros(k, dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("images", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")

    def update(
        self, probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        for name, value in _update(probs, target, valid, self.multiclass, self.threshold).items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, torch.Tensor]:
        scores = _compute(
            {
                n: getattr(self, n)
                for n in ("dice_sum", "iou_sum", "images", "inter", "pred", "true")
            }
        )
        out: dict[str, torch.Tensor] = {}
        for name, per_class in scores.items():
            out[f"{name}_mean"] = torch.nanmean(per_class).float()
            if name in ("dice", "iou"):
                out.update(
                    {
                        f"{name}/{metric_key(c)}": v.float()
                        for c, v in zip(self.class_names, per_class, strict=True)
                    }
                )
        return out
