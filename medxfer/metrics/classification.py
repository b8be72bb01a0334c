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
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

from medxfer.artifacts import AUROC_LABELS, AUROC_MEAN
from medxfer.naming import POSITIVES

__all__ = ["MultilabelAUROC", "label_mean", "masked_multilabel_auroc", "metric_key"]


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


def label_mean(
    per_label: torch.Tensor,
    positives: torch.Tensor,
    names: Sequence[str],
    warned: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``auroc_mean`` over the labels whose AUROC is defined, and ``auroc_labels``: how many
    that is, so a mean over 4 of 5 labels says so. A label without a positive case is warned
    about by name (once per name in ``warned``, the caller's memory across epochs): its AUROC
    is undefined, and it silently left the mean before.

    Args:
        per_label: ``(K,)`` AUROC, NaN where undefined.
        positives: ``(K,)`` positive cases per label.
        names: the K label names.
        warned: names already warned about (updated).

    Example:
        >>> out = label_mean(torch.tensor([0.5, float("nan"), 1.0]), torch.tensor([3, 0, 2]),
        ...                  ["A", "B", "C"], warned={"B"})
        >>> float(out["auroc_mean"]), int(out["auroc_labels"])
        (0.75, 2)
    """
    warned = set() if warned is None else warned
    empty = [n for n, p in zip(names, positives.tolist(), strict=True) if p == 0]
    new = [n for n in empty if n not in warned]
    if new:
        warned.update(new)
        rank_zero_warn(
            f"label(s) {new} have no positive case in this evaluation set: their AUROC is "
            f"undefined and auroc_mean averages the other labels ({AUROC_LABELS} says how many)"
        )
    defined = ~torch.isnan(per_label)
    mean = per_label[defined].mean() if defined.any() else per_label.new_tensor(float("nan"))
    return {AUROC_MEAN: mean, AUROC_LABELS: defined.sum().float()}


class MultilabelAUROC(Metric):
    """Per-label and mean AUROC with NaN-masked targets; exact under DDP.

    ``compute()`` returns ``{"auroc_mean": ..., "auroc_labels": ..., "auroc/<label>": ...,
    "positives/<label>": ...}`` (the positives among the label's known cases, which say how far
    its AUROC can be trusted); the mean skips labels without both classes and ``auroc_labels``
    counts the labels it averages (:func:`label_mean`, which warns about labels without a
    positive case).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, label_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self._warned: set[str] = set()
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
        out = label_mean(per_label, positives, self.label_names, self._warned)
        for name, auroc, pos in zip(self.label_names, per_label, positives, strict=True):
            out[f"auroc/{metric_key(name)}"] = auroc
            out[f"{POSITIVES}/{metric_key(name)}"] = pos
        return out
