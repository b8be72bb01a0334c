"""Multi-class classification of single images or of cases of several images (a dermatology case
of 1-6 photos) as in Mustafa et al. (2021): per-image
backbone features, their mean over the case's real images, dropout 0.2, one linear layer,
softmax; cross-entropy with soft targets (the dermatologists' weighted differential); top-1 and
top-3 accuracy against the top label, mean per-class accuracy (the natural targets of the scale
study) and per-class AUROC.

Only the real images of a case go through the backbone, so padding slots can change nothing --
not even BatchNorm statistics in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_accuracy
from torchmetrics.utilities import dim_zero_cat

from medxfer.artifacts import MEAN_CLASS_ACC, TOP1
from medxfer.metrics import label_mean, masked_multilabel_auroc, metric_key
from medxfer.naming import POSITIVES

from .base import TransferTask

__all__ = ["CaseClassifier", "CaseMetrics", "masked_mean"]


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``features`` ``(B, V, F)`` over the slots where ``mask`` ``(B, V)`` is true."""
    m = mask.to(features.dtype).unsqueeze(-1)
    return (features * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class CaseMetrics(Metric):
    """Top-1 / top-3 accuracy against the top label, mean per-class accuracy and one-vs-rest
    AUROC per class.

    ``compute()`` -> ``{"top1", "top3", "mean_class_acc", "auroc_mean", "auroc/<class>",
    "positives/<class>"}``, where ``positives/<class>`` counts the cases whose top label is the
    class (the positives of its one-vs-rest AUROC, named as
    :class:`medxfer.metrics.MultilabelAUROC` names them) and ``mean_class_acc`` is torchmetrics'
    macro-averaged multi-class accuracy (each class's top-1 accuracy over its cases, averaged
    over the classes; a class neither present nor predicted is left out). Every case is kept
    (AUROC is not decomposable) and gathered across DDP ranks, so every value is that of one
    process.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, class_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_names = list(class_names)
        self._warned: set[str] = set()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("top", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.top.append(target.argmax(dim=1))

    def compute(self) -> dict[str, torch.Tensor]:
        probs, top = dim_zero_cat(self.probs).cpu(), dim_zero_cat(self.top).cpu()
        k = min(3, probs.shape[1])
        ranked = probs.topk(k, dim=1).indices
        onehot = F.one_hot(top, probs.shape[1]).float()
        per_class = masked_multilabel_auroc(probs, onehot)
        positives = onehot.sum(dim=0)
        out = {
            TOP1: (ranked[:, 0] == top).float().mean(),
            "top3": (ranked == top[:, None]).any(dim=1).float().mean(),
            MEAN_CLASS_ACC: multiclass_accuracy(
                probs, top, num_classes=probs.shape[1], average="macro"
            ),
            **label_mean(per_class, positives, self.class_names, self._warned),
        }
        for name, auroc, pos in zip(self.class_names, per_class, positives, strict=True):
            out[f"auroc/{metric_key(name)}"] = auroc
            out[f"{POSITIVES}/{metric_key(name)}"] = pos
        return out


class CaseClassifier(TransferTask):
    """One distribution over classes (softmax) from a single image or a case of images (masked
    mean of features); hard (one-hot) or soft targets."""

    output_type: ClassVar[str] = "multiclass"

    def __init__(self, *args: Any, drop_rate: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, drop_rate=drop_rate, **kwargs)

    def encode(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(B, V, F)`` of a ``(B, V, C, H, W)`` batch; only slots with ``mask`` set
        are encoded (others stay zero)."""
        if mask is None or image.ndim != 5:
            return super().encode(image)
        real = super().encode(image[mask])
        out = real.new_zeros(*mask.shape, real.shape[-1])
        out[mask] = real
        return out

    def aggregate(self, features: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if features.ndim == 2:
            return features
        mask = batch.get("mask")
        return features.mean(dim=1) if mask is None else masked_mean(features, mask)

    def forward(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            batch = {"image": batch}
        return self.head(self.aggregate(self.encode(batch["image"], batch.get("mask")), batch))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with soft targets: ``-sum_k t_k log softmax(z)_k``, averaged over cases."""
        return F.cross_entropy(logits, target.to(logits.dtype))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    def make_metrics(self) -> CaseMetrics:
        return CaseMetrics(self.label_names)
