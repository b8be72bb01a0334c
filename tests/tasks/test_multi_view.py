"""MultiViewClassifier: the focal loss against the hand formula, activation checkpointing exact."""

from __future__ import annotations

import math

import pytest
import torch

from medxfer.tasks import MultiViewClassifier, masked_focal_loss

NAN = float("nan")
UNKNOWN_LOGIT = 9.0  # the logit of an entry with an unknown target: must not count


def _focal(z: float, y: float, gamma: float, alpha: float) -> float:
    """The sigmoid focal loss of one entry by hand (Lin et al., 2017):
    ``-a_t (1 - p_t)^gamma log p_t``, ``p_t = p`` for ``y = 1`` else ``1 - p``, ``a_t = alpha``
    for ``y = 1`` else ``1 - alpha`` (no weighting when ``alpha < 0``)."""
    p = 1 / (1 + math.exp(-z))
    p_t = p if y == 1 else 1 - p
    a_t = 1.0 if alpha < 0 else (alpha if y == 1 else 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize(
    ("gamma", "alpha"),
    [
        pytest.param(None, None, id="defaults-gamma-1.5-no-alpha"),
        pytest.param(2.0, 0.25, id="gamma-2-alpha-0.25"),
        pytest.param(0.0, -1.0, id="gamma-0-is-bce"),
    ],
)
def test_masked_focal_loss_equals_the_hand_formula_on_known_entries(
    gamma: float | None, alpha: float | None
) -> None:
    logits = torch.tensor([[1.0, -2.0], [0.5, 3.0], [UNKNOWN_LOGIT, -0.7]])
    target = torch.tensor([[1.0, NAN], [0.0, 1.0], [NAN, 0.0]])
    kw = {} if gamma is None else {"gamma": gamma, "alpha": alpha}
    g, a = (1.5, -1.0) if gamma is None else (gamma, alpha)
    known = [(1.0, 1.0), (0.5, 0.0), (3.0, 1.0), (-0.7, 0.0)]  # (logit, target), NaN skipped
    expected = sum(_focal(z, y, g, a) for z, y in known) / len(known)
    assert masked_focal_loss(logits, target, **kw).item() == pytest.approx(expected, rel=1e-6)


def test_masked_focal_loss_of_no_known_entry_is_zero_with_a_gradient() -> None:
    logits = torch.tensor([[1.0, -2.0]], requires_grad=True)
    loss = masked_focal_loss(logits, torch.full((1, 2), NAN))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    a = MultiViewClassifier(backbone="timm/test_resnet", num_classes=2, checkpointing=False)
    b = MultiViewClassifier(backbone="timm/test_resnet", num_classes=2, checkpointing=True)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    b.training = True  # checkpointing is used in training; dropout off via eval on submodules
    batch = {"image": torch.randn(2, 4, 3, 32, 32), "mask": torch.ones(2, 4, dtype=torch.bool)}
    for m in (a, b):
        m.loss(m(batch), torch.tensor([[1.0, 0.0], [0.0, NAN]])).backward()
    ga, gb = next(a.backbone.parameters()).grad, next(b.backbone.parameters()).grad
    torch.testing.assert_close(gb, ga)
    assert ga.abs().sum().item() > 0
