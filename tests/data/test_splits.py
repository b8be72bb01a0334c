"""The stratified patient-level split against hand-computed class counts (issue 25, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medxfer.data import patient_split


def _table(classes: list[str], rows_per_patient: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    table = pd.DataFrame(
        {
            "patient_id": [f"p{k // rows_per_patient}" for k in range(len(classes))],
            "c": classes,
        }
    )
    return table, pd.get_dummies(table["c"]).astype(float).to_numpy()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_class_counts_of_a_stratified_split_equal_the_fractions(seed: int) -> None:
    # 50 A, 30 B, 10 C, one row per patient, split 0.6 / 0.2 / 0.2: by hand every class splits
    # exactly (A 30/10/10, B 18/6/6, C 6/2/2), whatever the seed
    table, strata = _table(["A"] * 50 + ["B"] * 30 + ["C"] * 10)
    parts = patient_split(table, (0.6, 0.2, 0.2), seed, strata=strata)
    counts = [p["c"].value_counts().reindex(["A", "B", "C"], fill_value=0).tolist() for p in parts]
    assert counts == [[30, 18, 6], [10, 6, 2], [10, 6, 2]]


def test_a_rare_class_of_5_rows_lands_in_train() -> None:
    # 5 rare rows at 0.7 / 0.1 / 0.2 want 3.5 / 0.5 / 1.0: by hand, each goes to the part that
    # lacks most -> train, train, train, test (1.0 > 0.5), then train (0.5 = 0.5, more room)
    table, strata = _table(["common"] * 95 + ["rare"] * 5)
    for seed in range(5):
        parts = patient_split(table, (0.7, 0.1, 0.2), seed, strata=strata)
        assert [int((p["c"] == "rare").sum()) for p in parts] == [4, 0, 1]
        assert [len(p) for p in parts] == [70, 10, 20]


def test_multilabel_patients_stay_whole_and_each_label_is_balanced() -> None:
    rng = np.random.default_rng(0)
    n_patients, rows = 200, 3
    table = pd.DataFrame({"patient_id": np.repeat([f"p{k}" for k in range(n_patients)], rows)})
    labels = (rng.random((len(table), 4)) < [0.5, 0.2, 0.05, 0.02]).astype(float)
    fractions = (0.7, 0.1, 0.2)
    parts = patient_split(table, fractions, 3, strata=labels)
    seen = [set(p["patient_id"]) for p in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    for k in range(4):
        total = labels[:, k].sum()
        for part, f in zip(parts, fractions, strict=True):
            # within one patient's rows of the label's share (iterative stratification)
            assert abs(labels[part.index, k].sum() - f * total) <= rows
    assert sorted(np.concatenate([p.index for p in parts]).tolist()) == list(range(len(table)))


def test_a_part_of_fraction_zero_gets_no_patient() -> None:
    table, strata = _table(["A"] * 6 + ["B"] * 6, rows_per_patient=3)
    parts = patient_split(table, (0.8, 0.2, 0.0), 0, strata=strata)
    assert len(parts[2]) == 0 and len(parts[0]) + len(parts[1]) == 12
