"""Multi-label classification (chest X-ray findings) as in Mustafa et al. (2021): dropout 0.2,
one linear layer, sigmoid outputs, binary cross-entropy over the known labels only (NaN targets
-- ignored uncertain labels, or findings a shifted dataset lacks -- are masked), AUROC per label
and their mean."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medxfer.metrics import MultilabelAUROC

from .base import TransferTask

__all__ = ["MultiLabelClassifier", "masked_bce_with_logits"]


def masked_bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the entries whose target is not NaN (0 when none is)."""
    known = ~torch.isnan(target)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], target[known].to(logits.dtype))


class MultiLabelClassifier(TransferTask):
    """Multi-label findings: sigmoid / masked BCE, AUROC per label and mean."""

    def __init__(self, *args: Any, drop_rate: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, drop_rate=drop_rate, **kwargs)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_bce_with_logits(logits, target)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def make_metrics(self) -> MultilabelAUROC:
        return MultilabelAUROC(self.label_names)
