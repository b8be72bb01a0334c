"""Calibration, CKA, weight drift and subgroup gaps against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from medxfer.backbones import create_backbone, parameter_stages
from medxfer.metrics import (
    CalibrationError,
    MinibatchCKA,
    MultilabelAUROC,
    SubgroupMetrics,
    SubgroupReport,
    expected_calibration_error,
    linear_cka,
    subgroup_gaps,
    weight_drift,
)


def numpy_ece(conf: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """Direct binning: bins [b/n, (b+1)/n), the last closed."""
    total, n = 0.0, len(conf)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if inside.any():
            total += inside.sum() / n * abs(outcome[inside].mean() - conf[inside].mean())
    return total


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.random((500, 3)).astype(np.float32)
    y = (rng.random((500, 3)) < p**1.5).astype(np.float32)
    return p, y


@pytest.mark.parametrize("n_bins", [pytest.param(10, id="10-bins"), pytest.param(15, id="15-bins")])
def test_binary_ece_matches_numpy_and_torchmetrics(scores, n_bins: int) -> None:
    p, y = scores
    got = expected_calibration_error(
        torch.from_numpy(p[:, 0]), torch.from_numpy(y[:, 0]), n_bins=n_bins
    )
    assert got.item() == pytest.approx(numpy_ece(p[:, 0], y[:, 0], n_bins), abs=1e-6)
    ref = binary_calibration_error(
        torch.from_numpy(p[:, 0]), torch.from_numpy(y[:, 0]).long(), n_bins=n_bins
    )
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


def test_multilabel_ece_is_the_mean_over_labels_skipping_unknowns(scores) -> None:
    p, y = scores
    y = y.copy()
    y[::7, 1] = np.nan
    per_label = expected_calibration_error(
        torch.from_numpy(p), torch.from_numpy(y), task="multilabel", average="none"
    )
    expected = []
    for k in range(3):
        known = ~np.isnan(y[:, k])
        expected.append(numpy_ece(p[known, k], y[known, k], 15))
    np.testing.assert_allclose(per_label.numpy(), expected, atol=1e-6)
    metric = CalibrationError(15, "multilabel", ["a", "b", "c"])
    for chunk in np.array_split(np.arange(500), 9):
        metric.update(torch.from_numpy(p[chunk]), torch.from_numpy(y[chunk]))
    out = metric.compute()
    assert out["ece"].item() == pytest.approx(np.mean(expected), abs=1e-6)
    assert out["ece/b"].item() == pytest.approx(expected[1], abs=1e-6)
    assert metric.stats.shape == (3, 15, 3)  # constant memory whatever the number of cases


def test_multiclass_ece_uses_top_label_confidence() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(400, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 400)
    onehot = np.eye(5)[labels]
    got = expected_calibration_error(
        torch.tensor(probs), torch.tensor(onehot), n_bins=10, task="multiclass"
    )
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
    assert got.item() == pytest.approx(numpy_ece(conf, correct, 10), abs=1e-6)
    ref = multiclass_calibration_error(
        torch.tensor(probs).float(), torch.tensor(labels), num_classes=5, n_bins=10
    )
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.int64, id="int64"),
        pytest.param(torch.int32, id="int32"),
        pytest.param(torch.float32, id="float-classes"),
    ],
)
def test_multiclass_ece_accepts_integer_class_targets(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(2 * torch.randn(600, 4, generator=g), dim=1)
    labels = torch.randint(0, 4, (600,), generator=g)
    ref = multiclass_calibration_error(probs, labels, num_classes=4, n_bins=15, norm="l1")
    got = expected_calibration_error(probs, labels.to(dtype), n_bins=15, task="multiclass")
    assert got.item() == pytest.approx(ref.item(), abs=1e-6)
    metric = CalibrationError(15, "multiclass")  # the Metric shares the functional's update
    for chunk in torch.arange(600).split(77):
        metric.update(probs[chunk], labels[chunk].to(dtype))
    assert metric.compute()["ece"].item() == pytest.approx(ref.item(), abs=1e-6)
    onehot = expected_calibration_error(probs, torch.eye(4)[labels], n_bins=15, task="multiclass")
    assert onehot.item() == pytest.approx(ref.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param(torch.tensor([0, 1, 3]), "class 3 in target is out of range", id="too-big"),
        pytest.param(torch.tensor([0, -1, 2]), "class -1 in target is out of range", id="negative"),
        pytest.param(torch.tensor([0.0, 1.5, 2.0]), "class indices, got 1.5", id="fraction"),
        pytest.param(torch.tensor([0, 1]), r"got \(3, 3\), \(2,\)", id="wrong-length"),
    ],
)
def test_multiclass_ece_names_a_bad_class_target(target: torch.Tensor, message: str) -> None:
    probs = torch.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, target, task="multiclass")


def test_hand_computed_ece() -> None:
    # bin [0.2, 0.3): two cases at 0.25, one positive -> |0.5 - 0.25| ; bin [0.9, 1]: 0.9 with outcome 1 -> 0.1
    p = torch.tensor([0.25, 0.25, 0.9])
    y = torch.tensor([1.0, 0.0, 1.0])
    assert expected_calibration_error(p, y, n_bins=10).item() == pytest.approx(
        2 / 3 * 0.25 + 1 / 3 * 0.1
    )


def numpy_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Kornblith et al.'s Gram-matrix formulation, with the unbiased centring for debiased CKA."""

    def center(g: np.ndarray) -> np.ndarray:
        g = g.copy()
        n = len(g)
        if debiased:
            np.fill_diagonal(g, 0)
            means = g.sum(0) / (n - 2) - g.sum() / (2 * (n - 1) * (n - 2))
            g -= means[:, None] + means[None, :]
            np.fill_diagonal(g, 0)
            return g
        h = np.eye(n) - np.ones((n, n)) / n
        return h @ g @ h

    k, l = center(x @ x.T), center(y @ y.T)  # noqa: E741
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


@pytest.mark.parametrize(
    "debiased", [pytest.param(False, id="biased"), pytest.param(True, id="debiased")]
)
def test_linear_cka_properties_and_reference(debiased: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 20))
    y = np.tanh(x @ rng.normal(size=(20, 30))) + 0.5 * rng.normal(size=(120, 30))
    tx, ty = torch.tensor(x), torch.tensor(y)
    value = linear_cka(tx, ty, debiased).item()
    assert value == pytest.approx(numpy_cka(x, y, debiased), abs=1e-6)
    assert linear_cka(tx, tx, debiased).item() == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(tx * 7.5, ty, debiased).item() == pytest.approx(value, abs=1e-6)
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    assert linear_cka(tx, torch.tensor(y @ q), debiased).item() == pytest.approx(value, abs=1e-6)


def test_minibatch_cka_agrees_with_the_full_batch_estimate() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    y = x @ torch.randn(16, 24, generator=g) + 2.0 * torch.randn(2000, 24, generator=g)
    full = linear_cka(x, y, debiased=True).item()
    metric = MinibatchCKA()
    for xb, yb in zip(x.split(250), y.split(250), strict=True):
        metric.update(xb, yb)
    assert metric.compute().item() == pytest.approx(full, abs=0.02)
    assert 0.2 < full < 0.9


def test_weight_drift_is_zero_at_init_and_exact_on_a_perturbation() -> None:
    model = create_backbone("timm/test_resnet")
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    drift = weight_drift(model, initial, parameter_stages(model))
    assert all(v["l1"] == 0 and v["rel_l2"] == 0 for v in drift.values())
    w = model.layer2[0].conv1.weight
    with torch.no_grad():
        w[0, 0, 0, 0] += 0.5
        w[1, 0, 0, 0] -= 0.25
        model.bn1.weight += 1.0  # not a conv kernel: ignored
    drift = weight_drift(model, initial, parameter_stages(model))
    stage_convs = [
        p for n, p in model.named_parameters() if n.startswith("layer2.") and p.ndim == 4
    ]
    numel = sum(p.numel() for p in stage_convs)
    assert drift["stage/layer2"]["l1"] == pytest.approx(0.75 / numel)
    norm0 = math.sqrt(
        sum(
            initial[n].pow(2).sum().item()
            for n, p in model.named_parameters()
            if n.startswith("layer2.") and p.ndim == 4
        )
    )
    assert drift["stage/layer2"]["rel_l2"] == pytest.approx(
        math.sqrt(0.5**2 + 0.25**2) / norm0, rel=1e-5
    )
    block = drift["block/layer2.0"]
    assert block["l1"] == pytest.approx(
        0.75
        / sum(
            p.numel()
            for n, p in model.named_parameters()
            if n.startswith("layer2.0.") and p.ndim == 4
        )
    )
    assert drift["stage/layer1"]["l1"] == 0 and drift["stage/act1"]["l1"] == 0


def test_subgroup_gaps_on_a_hand_built_table() -> None:
    # accuracy per subgroup: A 3/4, B 1/2, C 2/2
    probs, target = _accuracy_table()
    site = ["A", "A", "A", "A", "B", "B", "C", "C"]
    rep = subgroup_gaps(probs, target, {"site": site}, metric="accuracy", min_size=2)["site"]
    assert rep.values == {"A": 0.75, "B": 0.5, "C": 1.0}
    mean = (0.75 + 0.5 + 1.0) / 3
    assert rep.mean == pytest.approx(mean)
    assert rep.gap == pytest.approx(abs(0.5 - mean) / mean)
    assert rep.worst == 0.5 and rep.ratio == pytest.approx(2.0)
    small = subgroup_gaps(probs, target, {"site": site}, metric="accuracy", min_size=3)["site"]
    assert small.too_small == ["B", "C"] and small.values == {"A": 0.75} and small.sizes["C"] == 2
    metric = SubgroupMetrics(["site"], "accuracy", min_size=2)
    metric.update(probs[:5], target[:5], {"site": site[:5]})
    metric.update(probs[5:], target[5:], {"site": site[5:]})
    assert metric.compute()["site"].values == rep.values


def _accuracy_table() -> tuple[torch.Tensor, torch.Tensor]:
    """8 two-class cases; top-1 right on cases 0, 1, 2, 4, 6 and 7 (hand-checked)."""
    probs = torch.tensor(
        [
            [0.9, 0.1],
            [0.8, 0.2],
            [0.3, 0.7],
            [0.6, 0.4],
            [0.9, 0.1],
            [0.2, 0.8],
            [0.5, 0.4],
            [0.1, 0.9],
        ]
    )
    target = torch.tensor(
        [[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=torch.float32
    )
    return probs, target


def test_unknown_subgroup_joins_the_gap_only_when_asked() -> None:
    # accuracy: F 3/4, M 1/2, unknown 2/2
    probs, target = _accuracy_table()
    sex = ["F", "F", "F", "F", "M", "M", "unknown", "unknown"]
    rep = subgroup_gaps(probs, target, {"sex": sex}, metric="accuracy", min_size=2)["sex"]
    assert rep.values == {"F": 0.75, "M": 0.5} and rep.unknown == {"unknown": 1.0}
    assert rep.sizes["unknown"] == 2
    mean = (0.75 + 0.5) / 2
    assert rep.mean == pytest.approx(mean) and rep.gap == pytest.approx(0.125 / mean)
    assert rep.worst == 0.5 and rep.ratio == pytest.approx(1.5)
    both = subgroup_gaps(
        probs, target, {"sex": sex}, metric="accuracy", min_size=2, include_unknown=True
    )["sex"]
    assert both.values == {"F": 0.75, "M": 0.5, "unknown": 1.0} and both.unknown == {}
    assert both.gap == pytest.approx(abs(0.5 - 0.75) / 0.75)  # mean of the three is 0.75
    metric = SubgroupMetrics(["sex"], "accuracy", min_size=2)
    metric.update(probs[:3], target[:3], {"sex": sex[:3]})
    metric.update(probs[3:], target[3:], {"sex": sex[3:]})
    assert metric.compute()["sex"] == rep
    metric = SubgroupMetrics(["sex"], "accuracy", min_size=2, include_unknown=True)
    metric.update(probs, target, {"sex": sex})
    assert metric.compute()["sex"] == both


@pytest.mark.parametrize(
    ("groups", "min_size", "include_unknown", "values"),
    [
        pytest.param(["A"] * 8, 2, False, {"A": 0.75}, id="one-group"),
        pytest.param(["A"] * 6 + ["B"] * 2, 3, False, {"A": 4 / 6}, id="other-too-small"),
        pytest.param(["A"] * 4 + ["unknown"] * 4, 2, False, {"A": 0.75}, id="other-unknown"),
    ],
)
def test_a_gap_needs_two_scored_subgroups(
    groups: list[str], min_size: int, include_unknown: bool, values: dict[str, float]
) -> None:
    probs, target = _accuracy_table()
    rep = subgroup_gaps(probs, target, {"g": groups}, "accuracy", min_size, include_unknown)["g"]
    assert rep.values == pytest.approx(values)
    assert math.isnan(rep.gap) and math.isnan(rep.ratio)  # n/a, not 0
    assert rep.mean == pytest.approx(next(iter(values.values())))


def test_subgroup_report_survives_strict_json() -> None:
    from medxfer.artifacts import jsonable

    probs, target = _accuracy_table()
    rep = subgroup_gaps(probs, target, {"g": ["A"] * 8}, "accuracy", 2)["g"]
    text = json.dumps(jsonable(rep.as_dict()), allow_nan=False)
    assert '"gap": null' in text
    back = SubgroupReport.from_dict(json.loads(text))
    assert back.values == rep.values and math.isnan(back.gap) and math.isnan(back.ratio)


def test_multilabel_auroc_counts_the_positives_of_each_label() -> None:
    rng = np.random.default_rng(3)
    target = (rng.random((120, 3)) < [0.5, 0.2, 0.05]).astype(np.float32)
    target[rng.random((120, 3)) < 0.25] = np.nan
    probs = rng.random((120, 3)).astype(np.float32)
    metric = MultilabelAUROC(["a", "b c", "d"])
    for chunk in np.array_split(np.arange(120), 5):
        metric.update(torch.from_numpy(probs[chunk]), torch.from_numpy(target[chunk]))
    out = metric.compute()
    for k, key in enumerate(["a", "b_c", "d"]):
        known = ~np.isnan(target[:, k])
        assert out[f"positives/{key}"].item() == np.sum(target[known, k] == 1)
        assert out[f"auroc/{key}"].item() == pytest.approx(
            roc_auc_score(target[known, k], probs[known, k]), abs=1e-6
        )
