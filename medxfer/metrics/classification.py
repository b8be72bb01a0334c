"""Classification metrics with unknown labels: AUROC per label over the cases whose label is
known (target not NaN), and the mean over labels, as reported by Irvin et al. (CheXpert, 2019)
and Mustafa et al. (2021).

The Metric keeps every case's probabilities (AUROC is not decomposable), gathered across DDP
ranks by torchmetrics before computing, so N processes give exactly the single-process value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from medxfer.artifacts import AUROC_MEAN
from medxfer.naming import POSITIVES

__all__ = ["MultilabelAUROC", "masked_multilabel_auroc", "metric_key"]


def metric_key(name: str) -> str:
    """A label name as a logger-safe key part (``"Pleural Effusion"`` -> ``"Pleural_Effusion"``)."""
    return name.replace(" ", "_").replace("/", "_")


def masked_multilabel_auroc(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AUROC per label over the rows where that label is known.

    Args:
        probs: ``(N, K)`` predicted probabilities.
        target: ``(N, K)`` 0/1 with NaN for unknown.

    Returns:
        ``(K,)`` AUROC; NaN for a label whose known cases hold a single class.
    """
    out = torch.full((probs.shape[1],), float("nan"), dtype=torch.float32)
    for k in range(probs.shape[1]):
        known = ~torch.isnan(target[:, k])
        t = target[known, k]
        if t.numel() and 0 < t.sum() < t.numel():
            out[k] = binary_auroc(probs[known, k].float(), t.long())
    return out


class MultilabelAUROC(Metric):
    """Per-label and mean AUROC with NaN-masked targets; exact under DDP.

    ``compute()`` returns ``{"auroc_mean": ..., "auroc/<label>": ..., "positives/<label>": ...}``
    (the positives among the label's known cases, which say how far its AUROC can be trusted);
    the mean skips labels without both classes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, label_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``probs`` and ``target`` of shape ``(B, K)``."""
        self.probs.append(probs.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        target = dim_zero_cat(self.target).cpu()
        per_label = masked_multilabel_auroc(dim_zero_cat(self.probs).cpu(), target)
        positives = (target == 1).sum(dim=0).float()
        out = {AUROC_MEAN: torch.nanmean(per_label)}
        for name, auroc, pos in zip(self.label_names, per_label, positives, strict=True):
            out[f"auroc/{metric_key(name)}"] = auroc
            out[f"{POSITIVES}/{metric_key(name)}"] = pos
        return out
