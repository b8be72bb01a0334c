"""Expected calibration error with equal-width bins (Naeini et al., AAAI 2015; Guo et al., ICML
2017), as reported for fine-tuned medical models by Mustafa et al. (2021).

* ``binary`` and ``multilabel``: each predicted probability against its 0/1 outcome (the
  reliability of the probability itself); multi-label ECE is computed per label (unknown, NaN,
  targets skipped), then averaged.
* ``multiclass``: the top-label confidence against whether the top label is right (the true
  class is an integer target ``(N,)``, as in torchmetrics and scikit-learn, or the argmax of a
  one-hot / soft target ``(N, K)``).

Only per-bin counts, confidence sums and outcome sums are kept, so the Metric uses constant
memory and its all-reduce is three small sums: exact under DDP. The functional form and the
Metric share :func:`_ece_update` and :func:`_ece_compute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchmetrics import Metric

from medxfer.artifacts import ECE

from .classification import metric_key

__all__ = ["CalibrationError", "expected_calibration_error", "reliability_bins"]

Task = Literal["binary", "multilabel", "multiclass"]


def _as_columns(
    probs: torch.Tensor, target: torch.Tensor, task: Task
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidences and outcomes as ``(N, L)`` columns (L labels, or 1), NaN outcome = unknown."""
    if task == "multiclass":
        probs = probs.detach().float()
        true = _class_index(probs, target.detach())
        conf, pred = probs.max(dim=1)
        return conf[:, None], (pred == true).float()[:, None]
    probs, target = probs.detach().float(), target.detach().float()
    if task == "binary":
        return probs.reshape(-1, 1), target.reshape(-1, 1)
    if task == "multilabel":
        if probs.ndim != 2 or target.shape != probs.shape:
            raise ValueError(
                f"multilabel ECE needs probs and target of shape (N, L), got {tuple(probs.shape)}, {tuple(target.shape)}"
            )
        return probs, target
    raise ValueError(f"task must be 'binary', 'multilabel' or 'multiclass', got {task!r}")


def _class_index(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The true class ``(N,)`` of multi-class ``target``: integer classes ``(N,)`` (the
    torchmetrics / scikit-learn convention), or the argmax of one-hot / soft ``(N, K)`` rows."""
    if probs.ndim != 2 or target.shape not in (probs.shape, probs.shape[:1]):
        raise ValueError(
            "multiclass ECE needs probs (N, K) and target (N,) classes or (N, K) one-hot / soft, "
            f"got {tuple(probs.shape)}, {tuple(target.shape)}"
        )
    if target.ndim == 2:
        return target.float().argmax(dim=1)
    if target.is_floating_point():
        if not (target == target.round()).all():  # NaN, or a fraction
            bad = target[target != target.round()][0].item()
            raise ValueError(f"multiclass ECE: target (N,) must hold class indices, got {bad}")
        target = target.long()
    if len(target) and not 0 <= int(target.min()) <= int(target.max()) < probs.shape[1]:
        bad = int(target.min()) if target.min() < 0 else int(target.max())
        raise ValueError(
            f"multiclass ECE: class {bad} in target is out of range for {probs.shape[1]} classes"
        )
    return target


def _ece_update(probs: torch.Tensor, target: torch.Tensor, n_bins: int, task: Task) -> torch.Tensor:
    """Per-label, per-bin sums ``(L, n_bins, 3)``: count, confidence sum, outcome sum.

    Bin ``b`` holds confidences in ``[b / n_bins, (b + 1) / n_bins)``; 1.0 goes in the last bin.
    """
    conf, outcome = _as_columns(probs, target, task)
    known = ~torch.isnan(outcome)
    idx = (conf * n_bins).floor().long().clamp_(0, n_bins - 1)
    labels = torch.arange(conf.shape[1], device=conf.device).expand_as(idx)
    flat = (labels * n_bins + idx)[known]
    stats = torch.zeros(conf.shape[1] * n_bins, 3, dtype=torch.float64, device=conf.device)
    stats[:, 0].index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
    stats[:, 1].index_add_(0, flat, conf[known].double())
    stats[:, 2].index_add_(0, flat, outcome[known].double())
    return stats.reshape(conf.shape[1], n_bins, 3)


def _ece_compute(stats: torch.Tensor) -> torch.Tensor:
    """ECE per label ``(L,)`` from bin sums: ``sum_b n_b / N * |mean outcome_b - mean conf_b|``."""
    count, conf_sum, out_sum = stats.unbind(-1)
    total = count.sum(dim=1)
    gap = (out_sum - conf_sum).abs()  # n_b * |acc_b - conf_b|
    ece = gap.sum(dim=1) / total
    return torch.where(total > 0, ece, torch.full_like(ece, float("nan"))).float()


def reliability_bins(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-bin count, mean confidence and mean outcome (NaN for empty bins), pooled over labels:
    the points of a reliability diagram."""
    pooled = stats.sum(dim=0)
    count = pooled[:, 0]
    safe = count.clamp(min=1)
    empty = count == 0
    return {
        "count": count,
        "confidence": torch.where(empty, torch.nan, pooled[:, 1] / safe),
        "outcome": torch.where(empty, torch.nan, pooled[:, 2] / safe),
    }


def expected_calibration_error(
    probs: torch.Tensor,
    target: torch.Tensor,
    n_bins: int = 15,
    task: Task = "binary",
    average: Literal["macro", "none"] = "macro",
) -> torch.Tensor:
    """Expected calibration error with ``n_bins`` equal-width bins.

    Args:
        probs: ``(N,)`` binary, ``(N, L)`` multi-label or ``(N, K)`` multi-class probabilities.
        target: the same shape, 0/1 (NaN = unknown, skipped); for multi-class, integer classes
            ``(N,)`` or one-hot / soft ``(N, K)``.
        n_bins: number of equal-width bins over [0, 1].
        task: ``binary``, ``multilabel`` or ``multiclass`` (see the module docstring).
        average: multi-label only: ``macro`` (mean over labels) or ``none`` (``(L,)``).

    Example:
        >>> expected_calibration_error(torch.tensor([0.9, 0.9]), torch.tensor([1.0, 0.0]), n_bins=10)
        tensor(0.4000)
    """
    ece = _ece_compute(_ece_update(probs, target, n_bins, task))
    return ece if (task == "multilabel" and average == "none") else torch.nanmean(ece)


class CalibrationError(Metric):
    """ECE as a Metric with constant-memory, DDP-exact per-bin states.

    ``compute()`` returns ``{"ece": mean}`` plus ``"ece/<label>"`` for multi-label tasks.
    ``stats`` (labels x bins x [count, confidence sum, outcome sum]) feeds reliability diagrams.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        n_bins: int = 15,
        task: Task = "multilabel",
        label_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins
        self.task: Task = task
        self.label_names = list(label_names or [])
        n_labels = max(1, len(self.label_names)) if task == "multilabel" else 1
        self.add_state(
            "stats",
            default=torch.zeros(n_labels, n_bins, 3, dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of probabilities and targets (shapes as in the functional form)."""
        new = _ece_update(probs, target, self.n_bins, self.task)
        if new.shape != self.stats.shape:
            raise ValueError(f"expected {self.stats.shape[0]} labels, got {new.shape[0]}")
        self.stats += new

    def compute(self) -> dict[str, torch.Tensor]:
        per_label = _ece_compute(self.stats)
        out = {ECE: torch.nanmean(per_label)}
        if self.task == "multilabel" and self.label_names:
            out.update(
                {
                    f"ece/{metric_key(n)}": v
                    for n, v in zip(self.label_names, per_label, strict=True)
                }
            )
        return out
