"""Patient-level splits: no patient's images in two splits, sizes close to the fractions asked.

Mustafa et al. (2021) re-split CheXpert's training set into train / validation / test
(167,429 / 22,240 / 33,745 images) because the official validation set has only 234 images;
this module does the same for any table with a patient column, reproducibly from a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["patient_split"]


def patient_split(
    table: pd.DataFrame,
    fractions: Sequence[float],
    seed: int = 0,
    patient_col: str = "patient_id",
) -> list[pd.DataFrame]:
    """Split ``table`` into ``len(fractions)`` parts by patient.

    Patients are shuffled with ``seed``, then taken largest first and each given to the part
    furthest below its target image count, so the image fractions come within a patient of the
    request (well under 1 % on datasets of thousands of patients).

    Args:
        table: one row per image (or case), with ``patient_col``.
        fractions: non-negative, summing to 1 (e.g. ``(0.75, 0.10, 0.15)``).
        seed: the split's seed; the same seed and table give the same split.
        patient_col: the column identifying a patient.

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
    by_size = np.argsort(-sizes, kind="stable")
    target = fr * len(table)
    filled = np.zeros(len(fr))
    part_of: dict[object, int] = {}
    for i in by_size:
        part = int(np.argmax(target - filled))
        part_of[patients[i]] = part
        filled[part] += sizes[i]
    assignment = table[patient_col].map(part_of).to_numpy()
    return [table[assignment == k] for k in range(len(fr))]
