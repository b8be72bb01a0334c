"""Bootstrap confidence intervals over cases, vectorised across resamples.

The report of a study gives each metric with a 95 % percentile bootstrap interval (Efron &
Tibshirani, 1993), resampling cases with replacement. AUROC is computed for a block of
resamples at once: scores are ranked into tie groups once; each resample is a row of drawn case
indices; one ``bincount`` gives every resample's positive and negative counts per tie group,
and the Mann-Whitney statistic follows from cumulative sums (ties count one half). No per-
resample Python loop and no sort inside the loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci", "resampled_auroc"]

_BLOCK_INDICES = 2**17  # drawn indices per vectorised block: the counts stay in the CPU cache


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate and its percentile interval."""

    value: float
    low: float
    high: float
    n_resamples: int

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def _auroc_codes(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Per case ``class * G + tie_group`` (class 0 negative, 1 positive, 2 unknown), G, classes."""
    _, group = np.unique(scores, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 1
    known = ~np.isnan(labels)
    cls = np.where(known, labels, 0).astype(np.int64) + 2 * (~known)
    n_cls = 3 if (~known).any() else 2
    return (cls * n_groups + group).astype(np.int64), n_groups, n_cls


def _auroc_from_codes(
    code: np.ndarray, n_groups: int, n_cls: int, indices: np.ndarray
) -> np.ndarray:
    r = indices.shape[0]
    span = n_cls * n_groups
    dtype = np.int32 if r * span < 2**31 else np.int64
    key = code.astype(dtype)[indices]
    key += (np.arange(r, dtype=dtype) * span)[:, None]
    counts = np.bincount(key.ravel(), minlength=r * span).reshape(r, n_cls, n_groups)
    neg, pos = counts[:, 0], counts[:, 1]
    # 2 * (negatives below g) + negatives at g == 2 * cumsum(neg)_g - neg_g; ties count one half
    weight = np.cumsum(neg, axis=1)
    n_neg = weight[:, -1].astype(np.float64)
    weight *= 2
    weight -= neg
    num = np.einsum("ij,ij->i", pos, weight).astype(np.float64) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (pos.sum(axis=1, dtype=np.float64) * n_neg)


def resampled_auroc(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """AUROC of each resample, a row of case ``indices`` ``(R, m)`` into ``scores`` / ``labels``
    (0/1, NaN = unknown: not counted); NaN where a resample lacks a class.

    ``AUROC = sum_g pos_g (neg below g + neg_g / 2) / (n_pos n_neg)`` over tie groups g.
    """
    return _auroc_from_codes(*_auroc_codes(scores, labels), indices)


def bootstrap_ci(
    probs: np.ndarray,
    target: np.ndarray,
    metric: Literal["auroc", "accuracy"] = "auroc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval of a metric over cases.

    Resample ``r`` is row ``r`` of ``np.random.default_rng(seed).integers(0, n, size=(n_resamples,
    n))`` (drawn in blocks from that same stream), so an interval can be reproduced exactly.

    Args:
        probs: ``(n,)`` scores, or ``(n, K)`` per-label probabilities (multi-label AUROC: the
            mean over labels, each over its known cases) / class probabilities (accuracy). With
            a leading replica axis, ``(R, n)`` / ``(R, n, K)``: R models' predictions on the same
            cases (the replicas of a configuration); the metric is then their mean, and every
            replica sees the same resamples, so the interval is that of the replica mean.
        target: ``(n,)`` / ``(n, K)``: 0/1 with NaN unknown (AUROC) or one-hot / soft
            (accuracy).
        metric: ``auroc`` or ``accuracy`` (top-1 against the target's argmax).
        n_resamples: resamples of the cases (>= 1000 for 95 % intervals).
        confidence: interval level.
        seed: seed of the resampling.
    """
    probs, target = np.asarray(probs, dtype=np.float64), np.asarray(target, dtype=np.float64)
    shape = probs.shape
    if probs.ndim == target.ndim:
        probs = probs[None]
    if probs.shape[1:] != target.shape:
        raise ValueError(
            f"probs {shape} do not match target {target.shape}: expected the target's shape, "
            "or (R, *target.shape) for R replicas"
        )
    n = target.shape[0]
    rng = np.random.default_rng(seed)
    everyone = np.arange(n)[None]
    if metric == "accuracy":
        if target.ndim != 2:
            raise ValueError(f"accuracy needs (n, K) probabilities, got target {target.shape}")
        correct = (probs.argmax(axis=2) == target.argmax(axis=1)).mean(axis=0)  # replica mean
        point = float(correct.mean())

        def stat(idx: np.ndarray) -> np.ndarray:
            return correct[idx].mean(axis=1)
    elif metric == "auroc":
        p3, t2 = (probs[..., None], target[:, None]) if target.ndim == 1 else (probs, target)
        codes = [[_auroc_codes(p[:, k], t2[:, k]) for k in range(t2.shape[1])] for p in p3]

        def stat(idx: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():  # a resample lacking a class in every label is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.mean(
                    [
                        np.nanmean(np.stack([_auroc_from_codes(*c, idx) for c in cs], 1), 1)
                        for cs in codes
                    ],
                    axis=0,
                )

        point = float(stat(everyone)[0])
    else:
        raise ValueError(f"metric must be 'auroc' or 'accuracy', got {metric!r}")
    block = int(np.clip(_BLOCK_INDICES // max(n, 1), 1, 64))
    samples = np.concatenate(
        [
            stat(rng.integers(0, n, size=(min(block, n_resamples - start), n)))
            for start in range(0, n_resamples, block)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return BootstrapCI(point, float(low), float(high), n_resamples)
