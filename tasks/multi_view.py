"""Multi-view classification: a fixed set of views per case (4-view screening mammograms), as in
the breast-cancer model of Mustafa et al. (2021) (after McKinney et al., Nature 2020): each view through the backbone separately (optionally
with activation checkpointing, so 2048 px views fit in memory), the four feature vectors
concatenated, and per horizon a head of 512 ReLU units, dropout 0.25 and a sigmoid output;
sigmoid focal loss with gamma 1.5 (Lin et al., ICCV 2017; torchvision's implementation) over
the known labels; AUROC per horizon, the 39-month AUROC as headline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import sigmoid_focal_loss

from medxfer.metrics import MultilabelAUROC

from .base import TransferTask

__all__ = ["MultiViewClassifier", "masked_focal_loss"]


def masked_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 1.5, alpha: float = -1.0
) -> torch.Tensor:
    """Mean sigmoid focal loss over entries whose target is known (not NaN)."""
    known = ~torch.isnan(target)
    if not known.any():
        return logits.sum() * 0.0
    return sigmoid_focal_loss(
        logits[known], target[known].to(logits.dtype), alpha=alpha, gamma=gamma, reduction="mean"
    )


class MultiViewClassifier(TransferTask):
    """4 views -> concatenated features -> one 512-unit head per horizon; focal loss.

    Args (beyond :class:`TransferTask`):
        num_views: views per exam (4).
        hidden: hidden units of each horizon's head.
        head_dropout: dropout of each head.
        focal_gamma, focal_alpha: focal loss parameters (``alpha < 0``: no class weighting).
        checkpointing: recompute each view's activations in the backward pass (saves memory).
    """

    def __init__(
        self,
        *args: Any,
        num_views: int = 4,
        hidden: int = 512,
        head_dropout: float = 0.25,
        focal_gamma: float = 1.5,
        focal_alpha: float = -1.0,
        checkpointing: bool = False,
        **kwargs: Any,
    ) -> None:
        self._num_views, self._hidden, self._head_dropout = num_views, hidden, head_dropout
        super().__init__(*args, **kwargs)

    def build_head(self, num_features: int, num_classes: int) -> nn.Module:
        """One ``Linear(4F, 512) -> ReLU -> Dropout(0.25) -> Linear(512, 1)`` per horizon."""
        heads = [
            nn.Sequential(
                nn.Linear(self._num_views * num_features, self._hidden),
                nn.ReLU(),
                nn.Dropout(self._head_dropout),
                nn.Linear(self._hidden, 1),
            )
            for _ in range(num_classes)
        ]
        return _Heads(heads)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, V, C, H, W)`` -> ``(B, V, F)``, one view at a time (bounded memory)."""
        if image.ndim != 5:
            return super().encode(image)
        feats = []
        for v in range(image.shape[1]):
            x = image[:, v]
            if self.hparams.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.hparams.checkpointing and self.training and torch.is_grad_enabled():
                feats.append(checkpoint(self.backbone, x, use_reentrant=False))
            else:
                feats.append(self.backbone(x))
        return torch.stack(feats, dim=1)

    def aggregate(self, features: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Concatenate the views' features; a missing view contributes zeros."""
        mask = batch.get("mask")
        if mask is not None:
            features = features * mask.to(features.dtype).unsqueeze(-1)
        return features.flatten(1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_focal_loss(logits, target, self.hparams.focal_gamma, self.hparams.focal_alpha)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def make_metrics(self) -> MultilabelAUROC:
        return MultilabelAUROC(self.label_names)


class _Heads(nn.Module):
    """Independent heads, one output column each."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=1)
