"""MultiViewClassifier: the focal loss against torchvision's, activation checkpointing exact."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from medxfer.tasks import MultiViewClassifier, masked_focal_loss

NAN = float("nan")


def test_masked_focal_loss_matches_torchvision_on_known_entries() -> None:
    logits = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    target = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    known = ~torch.isnan(target)
    ref = sigmoid_focal_loss(logits[known], target[known], alpha=-1, gamma=1.5, reduction="mean")
    assert masked_focal_loss(logits, target).item() == pytest.approx(ref.item())
    # hand check of one term: -(1-p)^1.5 log p for z=1, y=1
    p = 1 / (1 + math.exp(-1.0))
    assert sigmoid_focal_loss(
        torch.tensor([1.0]), torch.tensor([1.0]), alpha=-1, gamma=1.5
    ).item() == pytest.approx(-((1 - p) ** 1.5) * math.log(p))


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
