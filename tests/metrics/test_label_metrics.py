"""Means over labels say what they average: ``auroc_mean`` with its label count, and the
multi-label subgroup gap over the labels defined in every compared subgroup -- each against
scikit-learn's AUROC on hand-built tables (issue 25, items 2 and 3)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medxfer.artifacts import AUROC_LABELS, AUROC_MEAN, jsonable
from medxfer.metrics import MultilabelAUROC, SubgroupMetrics, SubgroupReport, subgroup_gaps

NAMES = [f"L{k}" for k in range(6)]


def test_auroc_mean_says_how_many_labels_it_averages_and_names_the_empty_one() -> None:
    rng = np.random.default_rng(0)
    target = (rng.random((80, 3)) < 0.4).astype(np.float32)
    target[:, 1] = 0.0  # no positive for label 'b' in this evaluation set
    probs = rng.random((80, 3)).astype(np.float32)
    metric = MultilabelAUROC(["a", "b", "c"])
    metric.update(torch.from_numpy(probs), torch.from_numpy(target))
    with pytest.warns(UserWarning, match=r"label\(s\) \['b'\] have no positive case"):
        out = metric.compute()
    expected = np.mean([roc_auc_score(target[:, k], probs[:, k]) for k in (0, 2)])
    assert out[AUROC_MEAN].item() == pytest.approx(expected, abs=1e-6)
    assert out[AUROC_LABELS].item() == 2


def _two_groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """60 Female and 60 Male cases, 6 labels; in the Female cases labels L3..L5 are all
    negative (undefined AUROC), so Female has 3 defined labels and Male 6."""
    n = 60
    sex = ["Female"] * n + ["Male"] * n
    target = (rng.random((2 * n, 6)) < 0.4).astype(np.float32)
    target[:n, 3:] = 0.0
    target[:n, 0] = np.tile([0, 1], n // 2)  # both classes, whatever the draw
    probs = np.clip(target * 0.3 + rng.random((2 * n, 6)) * 0.7, 0, 1).astype(np.float32)
    return probs, target, sex


def test_multilabel_subgroup_gap_is_over_the_labels_defined_in_every_group() -> None:
    probs, target, sex = _two_groups(np.random.default_rng(1))
    report = subgroup_gaps(
        torch.from_numpy(probs),
        torch.from_numpy(target),
        {"sex": sex},
        "auroc",
        10,
        label_names=NAMES,
    )["sex"]
    assert report.labels == ["L0", "L1", "L2"]
    rows = {"Female": slice(0, 60), "Male": slice(60, 120)}
    per = {
        g: [roc_auc_score(target[r, k], probs[r, k]) for k in range(6) if g == "Male" or k < 3]
        for g, r in rows.items()
    }
    common = {g: float(np.mean(v[:3])) for g, v in per.items()}  # by hand: L0..L2 only
    mean = (common["Female"] + common["Male"]) / 2
    gap = max(abs(v - mean) for v in common.values()) / mean
    assert report.values == pytest.approx(common, abs=1e-6)
    assert report.gap == pytest.approx(gap, abs=1e-6)
    # the old per-group mean (Male over its 6 labels) gives a different, incomparable gap
    assert not math.isclose(float(np.mean(per["Male"])), common["Male"], abs_tol=1e-4)
    assert report.per_label["Male"]["L5"] == pytest.approx(per["Male"][5], abs=1e-6)
    assert math.isnan(report.per_label["Female"]["L4"])
    back = SubgroupReport.from_dict(json.loads(json.dumps(jsonable(report.as_dict()))))
    assert back.labels == report.labels and math.isnan(back.per_label["Female"]["L4"])


def test_the_metric_class_names_the_common_labels_like_the_function() -> None:
    probs, target, sex = _two_groups(np.random.default_rng(2))
    metric = SubgroupMetrics(["sex"], "auroc", min_size=10, label_names=NAMES)
    for chunk in np.array_split(np.arange(120), 4):
        metric.update(
            torch.from_numpy(probs[chunk]),
            torch.from_numpy(target[chunk]),
            {"sex": [sex[i] for i in chunk]},
        )
    report = metric.compute()["sex"]
    direct = subgroup_gaps(
        torch.from_numpy(probs),
        torch.from_numpy(target),
        {"sex": sex},
        "auroc",
        10,
        label_names=NAMES,
    )["sex"]
    assert report.labels == direct.labels == ["L0", "L1", "L2"]
    assert report.gap == pytest.approx(direct.gap, abs=1e-9)


def test_the_unknown_group_is_scored_over_the_common_labels_it_has() -> None:
    """The unknown group is kept apart; lacking one of the compared groups' common labels, it is
    scored over the common labels it has (by hand: its AUROC on label 0 is 1.0), not undefined."""
    import torch

    from medxfer.metrics.subgroups import subgroup_gaps

    y = torch.tensor([[1, 1], [0, 0], [1, 1], [0, 0], [1, 1], [0, 1]], dtype=torch.float32)
    p = torch.tensor([[0.9, 0.8], [0.1, 0.2], [0.8, 0.3], [0.2, 0.6], [0.7, 0.5], [0.4, 0.4]])
    groups = {"sex": ["F", "F", "M", "M", "unknown", "unknown"]}
    report = subgroup_gaps(p, y, groups, min_size=1, label_names=["a", "b"])["sex"]
    assert report.labels == ["a", "b"]
    assert report.unknown == {"unknown": pytest.approx(1.0)}  # label b: all positive there
    assert "unknown" not in report.undefined
