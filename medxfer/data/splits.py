"""Patient-level splits: no patient's images in two splits, sizes close to the fractions asked.

Mustafa et al. (2021) re-split CheXpert's training set into train / validation / test
(167,429 / 22,240 / 33,745 images) because the official validation set has only 234 images;
this module does the same for any table with a patient column, reproducibly from a seed.

Stratified (``strata``: a class one-hot or multi-label indicator per row), the split is the
iterative stratification of Sechidis, Tsoumakas & Vlahavas (2011, "On the stratification of
multi-label data", ECML PKDD) run over patients: labels are served rarest first, and each
patient holding the label goes to the part that most lacks that label's cases (ties: the part
that most lacks cases overall). A class of 5 rows then lands in train as well as in test, and
every part's class counts are within a patient of the fractions. Written here because
scikit-learn's ``StratifiedGroupKFold`` takes one label per row and equal folds, not (train,
val, test) fractions of multi-label patients, and no multi-label stratifier is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["patient_split", "stratified_parts"]

log = logging.getLogger(__name__)


def patient_split(
    table: pd.DataFrame,
    fractions: Sequence[float],
    seed: int = 0,
    patient_col: str = "patient_id",
    strata: np.ndarray | None = None,
) -> list[pd.DataFrame]:
    """Split ``table`` into ``len(fractions)`` parts by patient.

    Patients are shuffled with ``seed``, then taken largest first and each given to the part
    furthest below its target image count, so the image fractions come within a patient of the
    request (well under 1 % on datasets of thousands of patients). With ``strata`` the
    patients holding a label are placed first, label by label (:func:`stratified_parts`), and
    the rest as above.

    Args:
        table: one row per image (or case), with ``patient_col``.
        fractions: non-negative, summing to 1 (e.g. ``(0.75, 0.10, 0.15)``).
        seed: the split's seed; the same seed and table give the same split.
        patient_col: the column identifying a patient.
        strata: ``(N, K)`` indicators (0/1; NaN read as 0) of each row's class or labels, in
            row order: stratify by them at patient level.

    Returns:
        One table per fraction, each keeping the original row order and index.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) == 0 or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    if patient_col not in table.columns:
        raise ValueError(f"no patient column {patient_col!r}; columns are {list(table.columns)}")
    counts = table[patient_col].value_counts(sort=False)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    patients = counts.index.to_numpy()[order]
    sizes = counts.to_numpy()[order]
    target = fr * len(table)
    if strata is not None:
        y = np.nan_to_num(np.asarray(strata, dtype=float), nan=0.0) > 0.5
        if y.ndim != 2 or len(y) != len(table):
            raise ValueError(f"strata must be (N, K) for {len(table)} rows, got {y.shape}")
        codes = pd.Index(patients).get_indexer(table[patient_col])
        per_patient = np.zeros((len(patients), y.shape[1]))
        np.add.at(per_patient, codes, y)
        parts = stratified_parts(per_patient, sizes, fr)
    else:
        parts = np.full(len(patients), -1)
    filled = np.array([sizes[parts == k].sum() for k in range(len(fr))], dtype=float)
    for i in np.argsort(-sizes, kind="stable"):
        if parts[i] < 0:  # patients without a stratum label, or an unstratified split
            parts[i] = int(np.argmax(np.where(fr > 0, target - filled, -np.inf)))
            filled[parts[i]] += sizes[i]
    part_of = dict(zip(patients, parts.tolist(), strict=True))
    assignment = table[patient_col].map(part_of).to_numpy()
    return [table[assignment == k] for k in range(len(fr))]


def stratified_parts(labels: np.ndarray, sizes: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Iterative stratification (Sechidis et al. 2011) of patients over parts.

    Args:
        labels: ``(P, K)`` cases of each label per patient (rows of the patient's images).
        sizes: ``(P,)`` rows per patient.
        fractions: ``(S,)`` the parts' fractions.

    Returns:
        ``(P,)`` the part of each patient holding a label; -1 for patients with none (the
        caller places them by size).

    Example:
        >>> labels = np.array([[1, 0]] * 5 + [[0, 1]] * 5)
        >>> stratified_parts(labels, np.ones(10), np.array([0.6, 0.4])).tolist()
        [0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    """
    labels = np.asarray(labels, dtype=float)
    want = np.outer(fractions, labels.sum(axis=0))  # (S, K) cases of each label per part
    room = fractions * float(np.sum(sizes))  # (S,) rows per part
    open_ = np.asarray(fractions) > 0
    parts = np.full(len(labels), -1)
    left = labels.sum(axis=1) > 0
    while left.any():
        remaining = labels[left].sum(axis=0)
        k = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))  # the rarest label left
        for i in np.flatnonzero(left & (labels[:, k] > 0)):
            # most lacking this label, then most lacking rows, then the first part
            lack = np.where(open_, want[:, k], -np.inf)  # a part of fraction 0 gets none
            part = int(np.lexsort((-np.arange(len(fractions)), room, lack))[-1])
            parts[i], left[i] = part, False
            want[part] -= labels[i]
            room[part] -= sizes[i]
    return parts
