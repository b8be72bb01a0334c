"""Bootstrap confidence intervals over cases, vectorised across resamples.

The report of a study gives each metric with a 95 % percentile bootstrap interval (Efron &
Tibshirani, 1993), resampling cases with replacement. Resample ``r`` is row ``r`` of
``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`` (:func:`resample_blocks`
draws it in blocks of rows from that one stream), over the cases in the order of their sorted
ids (:func:`case_order`): every replica of a configuration tested on the same cases sees the
same resamples, whatever order its cases were gathered in, so each replica's per-resample values
can be computed once, at test time, and the report only averages them over the replicas per
resample and takes percentiles (:func:`resampled_metrics`, :func:`replica_interval`).

Neither scipy.stats.bootstrap nor torchmetrics' BootStrapper shares resamples across models or
keeps per-resample values of multi-label AUROC / ECE cheaply, hence the kernels here:

* AUROC: scores are ranked into tie groups once; one ``bincount`` gives every resample's
  positive and negative counts per tie group, and the Mann-Whitney statistic follows from
  cumulative sums (ties count one half). No per-resample Python loop and no sort inside it.
* Metrics that are sums over cases (top-1 accuracy, ECE's per-bin sums, Dice's mean over
  images): each block's multiplicity matrix ``W`` (resample x case: how often the case was
  drawn) times a sparse per-case matrix.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

from medxfer.artifacts import AUROC_MEAN, DICE_MEAN, ECE, MEAN_CLASS_ACC, TOP1

__all__ = [
    "BOOTSTRAP_TASKS",
    "BootstrapCI",
    "bootstrap_ci",
    "case_order",
    "cases_digest",
    "replica_interval",
    "resample_blocks",
    "resampled_auroc",
    "resampled_metrics",
]

_BLOCK_INDICES = 2**17  # drawn indices per vectorised block: the counts stay in the CPU cache
#: The output types :func:`resampled_metrics` scores, and the ``results.json`` metrics of each.
BOOTSTRAP_TASKS = {
    "multilabel": (AUROC_MEAN, ECE),
    "multiclass": (TOP1, MEAN_CLASS_ACC, AUROC_MEAN, ECE),
    "segmentation": (DICE_MEAN,),
}
Task = Literal["multilabel", "multiclass", "segmentation"]


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate and its percentile interval."""

    value: float
    low: float
    high: float
    n_resamples: int

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


# Resamples -------------------------------------------------------------------------------------
def resample_blocks(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The rows of ``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`` in
    consecutive blocks ``(b, n)`` (a few hundred thousand indices each): the same stream
    whatever the block size, so the first ``m`` resamples of a longer draw are the ``m`` of a
    shorter one."""
    rng = np.random.default_rng(seed)
    block = int(np.clip(_BLOCK_INDICES // max(n, 1), 1, 64))
    for start in range(0, n_resamples, block):
        yield rng.integers(0, n, size=(min(block, n_resamples - start), n))


def case_order(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """The permutation that sorts the case ids: resamples index cases in this order, so that
    replicas whose cases came in different orders share them."""
    return np.argsort(np.asarray(ids).astype(str), kind="stable")


def cases_digest(ids: Sequence[str] | np.ndarray) -> str:
    """A short digest of the set of case ids (sorted): replicas with equal digests were tested
    on the same cases and share the resamples of :func:`resampled_metrics`."""
    text = "\n".join(sorted(np.asarray(ids).astype(str).tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# AUROC -----------------------------------------------------------------------------------------
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


# Every metric of a task ------------------------------------------------------------------------
def _multiplicity(indices: np.ndarray, n: int) -> np.ndarray:
    """``W[r, i]``: how often case ``i`` is drawn in resample ``r`` of ``indices`` ``(b, n)``."""
    b = indices.shape[0]
    key = indices + (np.arange(b) * n)[:, None]
    return np.bincount(key.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _ece_matrix(conf: np.ndarray, outcome: np.ndarray, n_bins: int) -> sparse.csr_matrix:
    """Per-case sparse columns ``(n, 3 L n_bins)``: for each label l and bin b, the case's count,
    confidence and outcome where its confidence falls in bin b and its outcome is known (bin b
    holds ``[b / n_bins, (b + 1) / n_bins)``, 1.0 the last bin, as in
    :mod:`medxfer.metrics.calibration`)."""
    n, n_labels = conf.shape
    known = ~np.isnan(outcome)
    bins = np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)
    case, label = np.nonzero(known)
    col = label * n_bins + bins[case, label]
    span = n_labels * n_bins
    cols = np.concatenate([col, col + span, col + 2 * span])
    data = np.concatenate([np.ones(len(case)), conf[case, label], outcome[case, label]]).astype(
        np.float64
    )
    rows = np.tile(case, 3)
    return sparse.csr_matrix((data, (rows, cols)), shape=(n, 3 * span))


def _ece_from_sums(sums: np.ndarray, n_labels: int, n_bins: int) -> np.ndarray:
    """ECE per resample ``(b,)`` from bin sums ``(b, 3 L n_bins)``: per label
    ``sum_b |outcome_b - confidence_b| / N``, then the mean over labels with known cases."""
    count, conf, out = sums.reshape(len(sums), 3, n_labels, n_bins).transpose(1, 0, 2, 3)
    total = count.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_label = np.abs(out - conf).sum(axis=2) / total
    per_label[total == 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_label, axis=1)


def _as_labels(task: Task, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0/1 labels (NaN unknown) for AUROC: a multi-class target as the one-hot of its top class
    (soft targets score their top label, as the task's metrics do)."""
    if task == "multiclass":
        return np.eye(probs.shape[1])[np.nan_to_num(target).argmax(axis=1)]
    return target


def resampled_metrics(
    probs: np.ndarray,
    target: np.ndarray,
    task: Task,
    n_resamples: int = 1000,
    seed: int = 0,
    dice: np.ndarray | None = None,
    n_bins: int = 15,
    indices: np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every metric of ``task`` (:data:`BOOTSTRAP_TASKS`, named as in ``results.json``) on each
    resample of the cases: ``{metric: (n_resamples,)}``.

    The cases are taken in the given order; put them in :func:`case_order` first so that
    replicas share resamples. Resamples are :func:`resample_blocks` ``(n, n_resamples, seed)``,
    or the rows of ``indices`` ``(R, m)`` when given (``np.arange(n)[None]``: the metrics on
    all cases).

    Args:
        probs: ``(n, K)`` per-label (multi-label) or class (multi-class) probabilities.
        target: ``(n, K)``: 0/1 with NaN unknown (multi-label), one-hot or soft (multi-class).
        task: ``multilabel`` (mean AUROC over labels, ECE per label then averaged),
            ``multiclass`` (top-1 against the top label, mean per-class accuracy over the
            classes a resample holds, one-vs-rest mean AUROC, top-label ECE) or ``segmentation`` (mean Dice, from ``dice``).
        n_resamples: resamples of the cases.
        seed: seed of the resampling.
        dice: ``(n, K)`` each case's Dice per class (segmentation).
        n_bins: ECE's equal-width bins.
        indices: explicit resamples instead of drawing them.
        metrics: compute only these of the task's metrics (default: all of them).
    """
    if task not in BOOTSTRAP_TASKS:
        raise ValueError(f"task must be one of {list(BOOTSTRAP_TASKS)}, got {task!r}")
    wanted = [m for m in BOOTSTRAP_TASKS[task] if metrics is None or m in metrics]
    if metrics is not None and len(wanted) != len(set(metrics)):
        raise ValueError(f"{task} resamples {list(BOOTSTRAP_TASKS[task])}, not {list(metrics)}")
    if task == "segmentation":
        if dice is None:
            raise ValueError("segmentation needs each case's Dice per class (dice=(n, K))")
        values = np.asarray(dice, dtype=np.float64)
        n = len(values)
    else:
        probs = np.asarray(probs, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        if probs.ndim == 1:
            probs, target = probs[:, None], target[:, None]
        if probs.shape != target.shape or probs.ndim != 2:
            raise ValueError(f"probs {probs.shape} do not match target {target.shape}: (n, K)")
        n = len(probs)
        labels = _as_labels(task, probs, target)
        codes = (
            [_auroc_codes(probs[:, k], labels[:, k]) for k in range(labels.shape[1])]
            if AUROC_MEAN in wanted
            else []
        )
        if task == "multiclass":
            truth = np.nan_to_num(target).argmax(axis=1)
            correct = (probs.argmax(axis=1) == truth).astype(float)
            member = np.eye(probs.shape[1])[truth]  # (n, K): each case's true class
            conf, outcome = probs.max(axis=1, keepdims=True), correct[:, None]
        else:
            conf, outcome = probs, target
        ece_cols = _ece_matrix(conf, outcome, n_bins).T.tocsr() if ECE in wanted else None

    def block(idx: np.ndarray) -> dict[str, np.ndarray]:
        m = idx.shape[1]
        w = _multiplicity(idx, n) if wanted != [AUROC_MEAN] else None  # AUROC: from idx
        if task == "segmentation":
            return {DICE_MEAN: _nanmean_rows(w @ values / m)}
        out = {}
        if AUROC_MEAN in wanted:
            with warnings.catch_warnings():  # a resample lacking a class in every label: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                per_label = [_auroc_from_codes(*c, idx) for c in codes]
                out[AUROC_MEAN] = np.nanmean(np.stack(per_label, 1), 1)
        if ece_cols is not None:
            out[ECE] = _ece_from_sums((ece_cols @ w.T).T, conf.shape[1], n_bins)
        if TOP1 in wanted:
            out[TOP1] = w @ correct / m
        if MEAN_CLASS_ACC in wanted:  # each class's recall on the resample, then their mean
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class = (w @ (member * correct[:, None])) / (w @ member)
            out[MEAN_CLASS_ACC] = _nanmean_rows(per_class)
        return out

    blocks = [
        block(idx)
        for idx in ([indices] if indices is not None else resample_blocks(n, n_resamples, seed))
    ]
    return {k: np.concatenate([b[k] for b in blocks]) for k in wanted}


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries (NaN for a row without one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=1)


def replica_interval(
    samples: Sequence[np.ndarray], confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile interval of the replica mean: ``samples`` holds each replica's values of
    one metric on the same resamples ``(R,)``; their mean per resample, then the percentiles
    (resamples where the metric is undefined are left out)."""
    mean = np.mean(np.stack([np.asarray(s, dtype=np.float64) for s in samples]), axis=0)
    if np.isnan(mean).all():
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(mean, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    probs: np.ndarray,
    target: np.ndarray,
    metric: Literal["auroc", "accuracy"] = "auroc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval of a metric over cases (:func:`resampled_metrics` on each
    replica, :func:`replica_interval` of their mean).

    Resample ``r`` is row ``r`` of ``np.random.default_rng(seed).integers(0, n, size=(n_resamples,
    n))`` over the cases in the given order, so an interval can be reproduced exactly.

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
    if metric == "accuracy":
        if target.ndim != 2:
            raise ValueError(f"accuracy needs (n, K) probabilities, got target {target.shape}")
        task: Task = "multiclass"
        key = TOP1
    elif metric == "auroc":
        task, key = "multilabel", AUROC_MEAN
    else:
        raise ValueError(f"metric must be 'auroc' or 'accuracy', got {metric!r}")
    everyone = np.arange(target.shape[0])[None]
    only = [key]
    point = float(
        np.mean(
            [resampled_metrics(p, target, task, indices=everyone, metrics=only)[key] for p in probs]
        )
    )
    samples = [
        resampled_metrics(p, target, task, n_resamples, seed, metrics=only)[key] for p in probs
    ]
    low, high = replica_interval(samples, confidence)
    return BootstrapCI(point, low, high, n_resamples)
