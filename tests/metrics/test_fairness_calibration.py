"""TPR at a fixed specificity, the equalised-odds gap, ECE per subgroup and temperature scaling
against hand-computed cases and independent computations (torchmetrics, scipy.optimize)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torchmetrics.functional.classification import binary_sensitivity_at_specificity

from medxfer.artifacts import jsonable
from medxfer.metrics import (
    TEMPERATURE_BOUNDS,
    SubgroupMetrics,
    SubgroupReport,
    TemperatureFit,
    equalized_odds_gap,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    subgroup_gaps,
    temperature_scaled,
    tpr_at_specificity,
)

F64 = torch.float64
INF = math.inf


@pytest.mark.parametrize(
    ("scores", "target", "spec", "tpr", "threshold"),
    [
        # negatives 0.1, 0.4, 0.5: spec >= 0.6 lets one of them score >= t; 0.45 is the lowest
        pytest.param(
            [0.1, 0.4, 0.5, 0.35, 0.45, 0.8], [0, 0, 0, 1, 1, 1], 0.6, 2 / 3, 0.45, id="one-fp"
        ),
        pytest.param(
            [0.1, 0.4, 0.5, 0.35, 0.45, 0.8], [0, 0, 0, 1, 1, 1], 1.0, 1 / 3, 0.8, id="no-fp"
        ),
        pytest.param(
            [0.1, 0.4, 0.5, 0.35, 0.45, 0.8], [0, 0, 0, 1, 1, 1], 0.0, 1.0, 0.1, id="spec-0"
        ),
        # a positive tied with a negative at 0.5 goes with it: both in, or both out
        pytest.param([0.5, 0.5, 0.9, 0.2], [0, 1, 1, 0], 0.5, 1.0, 0.5, id="tie-in"),
        pytest.param([0.5, 0.5, 0.9, 0.2], [0, 1, 1, 0], 0.75, 0.5, 0.9, id="tie-out"),
        # the top score is a negative: specificity 1 calls nothing positive
        pytest.param([0.9, 0.1], [0, 1], 1.0, 0.0, INF, id="nothing-called"),
        # unknown targets are skipped
        pytest.param(
            [0.1, 0.9, 0.8, 0.7], [0, 1, float("nan"), 0], 1.0, 1.0, 0.9, id="nan-skipped"
        ),
        pytest.param([0.1, 0.9], [1, 1], 0.9, math.nan, math.nan, id="no-negative"),
    ],
)
def test_tpr_at_specificity_hand_cases(scores, target, spec, tpr, threshold) -> None:
    got_tpr, got_t = tpr_at_specificity(
        torch.tensor(scores, dtype=F64), torch.tensor(target, dtype=F64), spec
    )
    assert got_tpr == pytest.approx(tpr, nan_ok=True)
    assert got_t == pytest.approx(threshold, nan_ok=True)


@pytest.mark.parametrize("spec", [0.5, 0.8, 0.9, 0.95])
def test_tpr_at_specificity_matches_torchmetrics(spec: float) -> None:
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(300, generator=g) < 0.3).float()
    s = (torch.rand(300, generator=g) + 0.4 * y).div(1.4).round(decimals=2)  # ties included
    ref, _ = binary_sensitivity_at_specificity(s, y.long(), spec)
    tpr, t = tpr_at_specificity(s, y, spec)
    assert tpr == pytest.approx(float(ref))
    assert float(((s >= t) & (y == 0)).sum() / (y == 0).sum()) <= 1 - spec + 1e-9


def test_equalized_odds_gap_hand_case() -> None:
    # at t = 0.5: a: TPR 2/2, FPR 1/2; b: TPR 1/3, FPR 0/1; c has no negative: left out
    s = torch.tensor([0.9, 0.6, 0.7, 0.1, 0.8, 0.2, 0.3, 0.4, 0.9])
    y = torch.tensor([1.0, 1, 0, 0, 1, 1, 1, 0, 1])
    groups = ["a"] * 4 + ["b"] * 4 + ["c"]
    assert equalized_odds_gap(s, y, groups, 0.5) == pytest.approx(max(1 - 1 / 3, 1 / 2))
    assert math.isnan(equalized_odds_gap(s, y, ["a"] * 9, 0.5))


def test_subgroup_operating_points_hand_case() -> None:
    # a: positives 0.9, 0.6, negatives 0.7, 0.1; b: positives 0.8, 0.15, negatives 0.25, 0.2.
    # All negatives 0.7, 0.25, 0.2, 0.1 at specificity 0.5: two may score >= t -> t = 0.25.
    s = torch.tensor([[0.9], [0.6], [0.7], [0.1], [0.8], [0.15], [0.25], [0.2]], dtype=F64)
    y = torch.tensor([[1.0], [1], [0], [0], [1], [1], [0], [0]])
    rep = subgroup_gaps(s, y, {"g": ["a"] * 4 + ["b"] * 4}, min_size=1, specificity=0.5)["g"]
    assert rep.thresholds == {"0": pytest.approx(0.25)}
    assert rep.tpr == {"a": 1.0, "b": 0.5} and rep.fpr == {"a": 0.5, "b": 0.5}
    assert rep.equalized_odds_gap == pytest.approx(0.5)
    # own thresholds: a keeps one of 0.7, 0.1 (t = 0.6), b one of 0.25, 0.2 (t = 0.25)
    assert rep.tpr_at_specificity == {"a": 1.0, "b": 0.5}
    assert rep.operating_labels == ["0"] and rep.specificity == 0.5


def test_ece_per_subgroup_is_ece_of_the_groups_rows() -> None:
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(120, 3, generator=g)
    target = (torch.rand(120, 3, generator=g) < probs).float()
    target[::7, 1] = float("nan")
    sex = ["F", "M", "unknown"] * 40
    rep = subgroup_gaps(probs, target, {"sex": sex}, min_size=10)["sex"]
    for name in ("F", "M", "unknown"):
        rows = torch.tensor([v == name for v in sex])
        ece = expected_calibration_error(probs[rows], target[rows], 15, task="multilabel")
        assert rep.ece[name] == pytest.approx(float(ece))
    # multi-class: top-label ECE of the group's rows; one-vs-rest operating points
    classes = torch.randint(0, 3, (120,), generator=g)
    soft = torch.softmax(3 * torch.rand(120, 3, generator=g), dim=1)
    rep = subgroup_gaps(soft, torch.eye(3)[classes], {"sex": sex}, "accuracy", min_size=10)["sex"]
    rows = torch.tensor([v == "F" for v in sex])
    assert rep.ece["F"] == pytest.approx(
        float(expected_calibration_error(soft[rows], classes[rows], task="multiclass"))
    )
    assert rep.tpr_at_specificity["F"] == pytest.approx(
        np.mean(
            [
                float(
                    binary_sensitivity_at_specificity(
                        soft[rows, k], (classes[rows] == k).long(), 0.9
                    )[0]
                )
                for k in range(3)
            ]
        )
    )


def test_subgroup_metric_and_json_round_trip() -> None:
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(80, 2, generator=g)
    target = (torch.rand(80, 2, generator=g) < probs).float()
    groups = {"sex": ["F", "M"] * 40}
    metric = SubgroupMetrics(["sex"], min_size=5, specificity=0.8)
    for i in range(0, 80, 16):  # batches
        metric.update(probs[i : i + 16], target[i : i + 16], {"sex": groups["sex"][i : i + 16]})
    rep = metric.compute()["sex"]
    direct = subgroup_gaps(probs, target, groups, min_size=5, specificity=0.8)["sex"]
    assert rep.as_dict() == direct.as_dict()
    back = SubgroupReport.from_dict(json.loads(json.dumps(jsonable(rep.as_dict()))))
    assert back.equalized_odds_gap == pytest.approx(rep.equalized_odds_gap)
    assert back.operating_points == rep.operating_points and back.tpr == rep.tpr
    assert subgroup_gaps(probs, target, groups, min_size=5, specificity=None)["sex"].ece == {}


# Temperature scaling ---------------------------------------------------------------------------
def test_temperature_closed_form_multilabel_and_multiclass() -> None:
    # every logit 2 and 70 % positive: the NLL-optimal sigmoid(2 / T) is 0.7
    z = torch.full((10, 2), 2.0)
    y = torch.tensor([[1.0, float("nan")]] * 7 + [[0.0, float("nan")]] * 3)  # NaN: ignored
    assert fit_temperature(z, y, "multilabel") == pytest.approx(2 / math.log(0.7 / 0.3), rel=1e-6)
    # two classes, logits (3, 0), the first class right in 80 %: softmax top = sigmoid(3 / T) = 0.8
    z = torch.tensor([[3.0, 0.0]] * 10)
    classes = torch.tensor([0] * 8 + [1] * 2)
    assert fit_temperature(z, classes, "multiclass") == pytest.approx(3 / math.log(4), rel=1e-6)
    assert math.isnan(fit_temperature(z[:, :1], torch.full((10, 1), float("nan"))))


def _scipy_temperature(z: np.ndarray, nll) -> float:
    """Nelder-Mead over log T, unbounded: another search than fit_temperature's."""
    res = minimize(
        lambda lt: nll(z / np.exp(lt[0])),
        x0=[0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-15},
    )
    return float(np.exp(res.x[0]))


def test_temperature_matches_scipy() -> None:
    g = torch.Generator().manual_seed(4)
    z = 3 * torch.randn(400, 4, generator=g, dtype=F64)
    y = (torch.rand(400, 4, generator=g, dtype=F64) < torch.sigmoid(z / 2.5)).double()
    y[::5, 2] = float("nan")
    known = ~torch.isnan(y)
    zk, yk = z[known].numpy(), y[known].numpy()

    def bce(u: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0, u) - yk * u))

    assert fit_temperature(z, y, "multilabel") == pytest.approx(
        _scipy_temperature(zk, bce), rel=1e-5
    )
    classes = torch.multinomial(torch.softmax(z / 0.7, 1), 1, generator=g)[:, 0].numpy()

    def ce(u: np.ndarray) -> float:
        lse = np.log(np.exp(u - u.max(1, keepdims=True)).sum(1)) + u.max(1)
        return float(np.mean(lse - u[np.arange(len(u)), classes]))

    assert fit_temperature(z, torch.from_numpy(classes), "multiclass") == pytest.approx(
        _scipy_temperature(z.numpy(), ce), rel=1e-5
    )


def test_temperature_recovers_overconfidence_and_lowers_ece() -> None:
    g = torch.Generator().manual_seed(5)
    true = torch.randn(20000, 1, generator=g, dtype=F64)
    y = (torch.rand(20000, 1, generator=g, dtype=F64) < torch.sigmoid(true)).double()
    probs = torch.sigmoid(2 * true)  # twice as confident as it should be
    metric = TemperatureFit("multilabel")
    metric.update(probs[:10000], y[:10000])
    metric.update(probs[10000:], y[10000:])
    t = float(metric.compute())
    assert t == pytest.approx(2.0, rel=0.05)
    scaled = temperature_scaled(logits_from_probs(probs, "multilabel"), t, "multilabel")
    assert expected_calibration_error(scaled, y) < expected_calibration_error(probs, y) / 3


def test_temperature_without_an_interior_minimum_lands_on_a_bound() -> None:
    z = torch.tensor([[3.0], [-2.0], [1.0], [-1.0]])
    separable = (z > 0).float()
    assert fit_temperature(z, separable) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-6)
    uninformative = torch.tensor([[1.0], [0.0], [0.0], [1.0]])  # the mirror image of z
    z = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert fit_temperature(z, uninformative) == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-6)
    with torch.inference_mode():  # as in a callback under trainer.validate
        assert fit_temperature(z, uninformative) == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-6)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_logits_from_probs_inverts_the_link(task: str) -> None:
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    probs = torch.softmax(z, 1) if task == "multiclass" else torch.sigmoid(z)
    back = temperature_scaled(logits_from_probs(probs, task), 1.0, task)
    assert torch.allclose(back, probs, atol=1e-9)
