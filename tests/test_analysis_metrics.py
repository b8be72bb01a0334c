"""Calibration, CKA, weight drift and subgroup gaps against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from medxfer.backbones import create_backbone
from medxfer.metrics import (
    CalibrationError,
    MinibatchCKA,
    SubgroupMetrics,
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
    drift = weight_drift(model, initial)
    assert all(v["l1"] == 0 and v["rel_l2"] == 0 for v in drift.values())
    w = model.layer2[0].conv1.weight
    with torch.no_grad():
        w[0, 0, 0, 0] += 0.5
        w[1, 0, 0, 0] -= 0.25
        model.bn1.weight += 1.0  # not a conv kernel: ignored
    drift = weight_drift(model, initial)
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
