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

Temperature scaling (Guo et al., ICML 2017, section 4.2): one scalar ``T > 0`` divides every
logit; it is fitted on validation predictions by minimising the negative log-likelihood --
binary cross-entropy of ``sigmoid(z / T)`` over the known labels for multi-label tasks, cross
entropy of ``softmax(z / T)`` for multi-class ones -- by :func:`scipy.optimize.minimize_scalar`
(bounded Brent) over ``log T`` in ``[log 0.01, log 100]``, in float64. It
changes no ranking (AUROC is unchanged), only confidence. Tasks hand callbacks probabilities,
not logits, so :func:`logits_from_probs` inverts the sigmoid / softmax (probabilities clipped to
``[eps, 1 - eps]``, i.e. logits within about +-16 for ``eps = 1e-7``: a float32 sigmoid is 1.0
beyond that anyway). :class:`TemperatureFit` keeps the validation logits (gathered across
ranks: the fit needs every case, it is not a sum) and fits ``T`` at ``compute``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from medxfer.artifacts import ECE

from .classification import metric_key

__all__ = [
    "TEMPERATURE_BOUNDS",
    "CalibrationError",
    "TemperatureFit",
    "expected_calibration_error",
    "fit_temperature",
    "logits_from_probs",
    "reliability_bins",
    "temperature_scaled",
]

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


def reliability_bins(stats: torch.Tensor, per_label: bool = False) -> dict[str, torch.Tensor]:
    """Per-bin count, mean confidence and mean outcome (NaN for empty bins): the points of a
    reliability diagram.

    Args:
        stats: ``(L, n_bins, 3)`` bin sums (:class:`CalibrationError`'s ``stats``).
        per_label: keep one diagram per label (``(L, n_bins)`` values) instead of pooling the
            labels into one (``(n_bins,)`` values).
    """
    pooled = stats if per_label else stats.sum(dim=0)
    count = pooled[..., 0]
    safe = count.clamp(min=1)
    empty = count == 0
    return {
        "count": count,
        "confidence": torch.where(empty, torch.nan, pooled[..., 1] / safe),
        "outcome": torch.where(empty, torch.nan, pooled[..., 2] / safe),
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


# Temperature scaling ----------------------------------------------------------------------------
ScalingTask = Literal["multilabel", "multiclass"]


def logits_from_probs(probs: torch.Tensor, task: ScalingTask, eps: float = 1e-7) -> torch.Tensor:
    """Logits whose sigmoid (``multilabel``) or softmax (``multiclass``) are ``probs``.

    The inverse sigmoid is ``log p - log(1 - p)``; for softmax, ``log p`` (softmax ignores a
    constant added to a row, so these are the logits up to that constant, which temperature
    scaling keeps irrelevant). ``probs`` are clipped to ``[eps, 1 - eps]`` first.

    Example:
        >>> logits_from_probs(torch.tensor([[0.5, 0.8807971]]), "multilabel")
        tensor([[0.0000, 2.0000]], dtype=torch.float64)
    """
    p = probs.detach().double().clamp(eps, 1 - eps)
    if task == "multiclass":
        return p.log()
    if task == "multilabel":
        return p.log() - (-p).log1p()
    raise ValueError(
        f"temperature scaling: task must be 'multilabel' or 'multiclass', got {task!r}"
    )


def temperature_scaled(logits: torch.Tensor, temperature: float, task: ScalingTask) -> torch.Tensor:
    """Probabilities of ``logits / temperature``: sigmoid (``multilabel``) or softmax over the
    last dimension (``multiclass``)."""
    z = logits / temperature
    return torch.softmax(z, dim=-1) if task == "multiclass" else torch.sigmoid(z)


def _temperature_nll(
    logits: torch.Tensor, target: torch.Tensor, task: ScalingTask
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets in the form the NLL takes: known multi-label entries, flattened, with
    their 0/1 targets; or multi-class rows with their class index."""
    logits = logits.detach().double()
    if task == "multiclass":
        return logits, _class_index(logits, target.detach())
    if task != "multilabel":
        raise ValueError(
            f"temperature scaling: task must be 'multilabel' or 'multiclass', got {task!r}"
        )
    if logits.shape != target.shape:
        raise ValueError(
            f"temperature scaling needs logits and target of one shape, got {tuple(logits.shape)}, {tuple(target.shape)}"
        )
    known = ~torch.isnan(target)
    return logits[known], target.detach().double()[known]


#: The bounds of the fitted temperature.
TEMPERATURE_BOUNDS = (0.01, 100.0)


def fit_temperature(
    logits: torch.Tensor, target: torch.Tensor, task: ScalingTask = "multilabel"
) -> float:
    """The temperature ``T`` minimising the mean NLL of ``logits / T`` against ``target``.

    Minimised over ``log T`` by :func:`scipy.optimize.minimize_scalar` (bounded Brent, to
    ``1e-10`` in ``log T``) within :data:`TEMPERATURE_BOUNDS`, in float64. One scalar needs no
    gradient, and the bounded search always ends: the NLL has no interior minimum when the
    validation predictions separate the classes (it falls as ``T -> 0``) or carry no
    information (as ``T -> inf``), and ``T`` then lands on a bound -- which says so.

    Args:
        logits: ``(N, L)`` multi-label logits (NaN targets skipped) or ``(N, K)`` multi-class
            logits.
        target: ``(N, L)`` 0/1 targets, NaN = unknown; multi-class: ``(N,)`` class indices or
            one-hot / soft ``(N, K)`` rows (their argmax is the class, as for ECE).
        task: ``multilabel`` (sigmoid, binary cross-entropy) or ``multiclass`` (softmax, cross
            entropy).

    Returns:
        ``T``; NaN without a known target.

    Example:
        >>> import math
        >>> # every logit is 2 and 70 % are positive: sigmoid(2 / T) = 0.7, T = 2 / logit(0.7)
        >>> z, y = torch.full((10, 1), 2.0), torch.tensor([[1.0]] * 7 + [[0.0]] * 3)
        >>> round(fit_temperature(z, y), 4), round(2 / math.log(0.7 / 0.3), 4)
        (2.3604, 2.3604)
    """
    from scipy.optimize import minimize_scalar

    z, y = _temperature_nll(logits, target, task)
    if len(y) == 0:
        return float("nan")
    loss_fn = (
        torch.nn.functional.cross_entropy
        if task == "multiclass"
        else torch.nn.functional.binary_cross_entropy_with_logits
    )
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(
        lambda log_t: float(loss_fn(z / math.exp(log_t), y)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(res.x)


class TemperatureFit(Metric):
    """:func:`fit_temperature` as a Metric fed probabilities: ``update(probs, target)`` keeps
    their logits (:func:`logits_from_probs`) and targets, gathered across ranks at
    ``compute()``, which returns ``T`` (a 0-dim tensor): the single-process value under DDP."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, task: ScalingTask = "multilabel", **kwargs) -> None:
        super().__init__(**kwargs)
        if task not in ("multilabel", "multiclass"):
            raise ValueError(
                f"temperature scaling: task must be 'multilabel' or 'multiclass', got {task!r}"
            )
        self.task: ScalingTask = task
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of probabilities (sigmoid / softmax outputs) and their targets."""
        self.logits.append(logits_from_probs(probs, self.task).float())
        self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        if isinstance(self.logits, list) and not self.logits:  # a list until synced
            return torch.tensor(float("nan"))
        return torch.tensor(
            fit_temperature(dim_zero_cat(self.logits), dim_zero_cat(self.target), self.task)
        )
