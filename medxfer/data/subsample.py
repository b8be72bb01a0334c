"""Training-set subsampling for data-efficiency and few-shot studies.

Mustafa et al. (2021) report the fraction of labelled data a model needs to match a baseline.
Subsets here are

* class-balanced: every stratum (class) is subsampled separately, so class proportions stay
  those of the full set; for multi-label data each case's stratum is its rarest positive label
  (or "none"), which keeps every label's prevalence close to the full set's;
* nested: each case gets one seeded random rank, and a fraction keeps the lowest ranks of every
  stratum, so for a given seed the 10 % subset lies inside the 20 % subset;
* or k-shot: the k lowest-ranked cases of every stratum.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["multilabel_strata", "subsample_mask"]

log = logging.getLogger(__name__)


def multilabel_strata(targets: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """Stratum of each row of a multi-label ``(n, K)`` target (NaN = unknown): the name of its
    rarest positive label, or ``"none"``."""
    y = np.nan_to_num(np.asarray(targets, dtype=float), nan=0.0) > 0.5
    names = list(names) if names is not None else [str(k) for k in range(y.shape[1])]
    prevalence = y.mean(axis=0)
    order = np.argsort(prevalence, kind="stable")  # rarest first
    out = np.full(len(y), "none", dtype=object)
    for k in order[::-1]:  # the rarest label is written last and wins
        out[y[:, k]] = names[k]
    return out


def subsample_mask(
    strata: Sequence[object], fraction: float | None = None, shots: int | None = None, seed: int = 0
) -> np.ndarray:
    """Boolean mask of the kept rows.

    Args:
        strata: the stratum (class) of each row.
        fraction: keep ``round(fraction * n_s)`` rows of each stratum (at least one).
        shots: keep ``min(shots, n_s)`` rows of each stratum.
        seed: the ranks' seed; subsets of one seed are nested.
    """
    strata = np.asarray(strata, dtype=object)
    if (fraction is None) == (shots is None):
        raise ValueError("give exactly one of fraction and shots")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be positive, got {shots}")
    rank = np.random.default_rng(seed).random(len(strata))
    keep = np.zeros(len(strata), dtype=bool)
    for s in dict.fromkeys(strata.tolist()):
        rows = np.flatnonzero(strata == s)
        n_keep = min(shots, len(rows)) if shots is not None else max(1, round(fraction * len(rows)))
        keep[rows[np.argsort(rank[rows], kind="stable")[:n_keep]]] = True
    return keep
