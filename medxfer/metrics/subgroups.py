"""Performance per subgroup (sex, age bin, view, breast density, skin type...) and the gaps
between subgroups, as in the fairness analyses of Mustafa et al. (2021).

For each attribute the task's metric (mean AUROC over labels, top-1 accuracy, or -- for
segmentation -- the mean Dice of the subgroup's images) is computed per subgroup. A multi-label
AUROC is averaged over the same labels in every compared subgroup: those defined (both classes
among the known cases) in each of them. Averaging each subgroup over its own defined labels
compared different label sets (Female over 3 labels, Male over 6); the report names the common
labels (``labels``) and keeps every subgroup's per-label AUROC (``per_label``). Over the subgroups large enough to be reported (``min_size`` cases) come their mean,
the paper's gap -- the largest relative deviation of a subgroup from that mean,
``max_g |m_g - mean| / mean`` -- the worst-group value and the max/min ratio. Smaller subgroups
are listed as too small, never silently dropped. Cases whose attribute is unknown (``unknown``,
``nan`` or empty) are not a group of people: they are scored and listed apart, and join the
gap only when asked (``include_unknown=True``). A gap (and ratio) needs two scored subgroups;
with fewer it is NaN (rendered ``n/a``), not 0.

The Metric keeps every case (AUROC is not decomposable) with each attribute's subgroup as an
integer code; the code -> name tables of all ranks are merged at ``compute``, so DDP gives the
single-process result.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
import torch.distributed as dist
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .classification import masked_multilabel_auroc

__all__ = ["UNKNOWN_GROUPS", "SubgroupMetrics", "SubgroupReport", "subgroup_gaps"]

MetricName = Literal["auroc", "accuracy", "dice"]

#: Subgroup names (compared in lower case) that mean "attribute unknown".
UNKNOWN_GROUPS = frozenset({"unknown", "nan", ""})


def _accuracy(probs: torch.Tensor, target: torch.Tensor) -> float:
    return (
        float((probs.argmax(dim=1) == target.argmax(dim=1)).float().mean())
        if len(probs)
        else float("nan")
    )


def _mean_dice(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Per-case Dice ``(N, K)`` (:func:`medxfer.metrics.case_dice`; ``target`` unused): the mean
    over cases per class, then over classes -- the segmentation metric's ``dice_mean``."""
    return float(torch.nanmean(scores.double().mean(dim=0))) if len(scores) else float("nan")


#: The metrics scored as one number per subgroup (``auroc`` is per label, then averaged over
#: the labels common to the compared subgroups, in :func:`subgroup_gaps`).
METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "accuracy": _accuracy,
    "dice": _mean_dice,
}


@dataclass
class SubgroupReport:
    """One attribute's subgroup results.

    Attributes:
        values: metric per reported subgroup.
        sizes: cases per subgroup (all subgroups, reported or not).
        too_small: subgroups under ``min_size`` (not in values, mean or gap).
        undefined: subgroups whose metric is undefined (e.g. AUROC with one class).
        unknown: metric of the unknown-attribute subgroup(s) left out of values, mean and gap
            (NaN when too small or undefined); empty with ``include_unknown=True``.
        labels: ``auroc``: the labels every value averages -- those defined in every compared
            subgroup (the scored ones, unknown apart); empty for other metrics.
        per_label: ``auroc``: subgroup -> label -> AUROC (NaN where undefined), for every
            subgroup large enough to score.
        mean: mean of ``values``.
        gap: ``max |value - mean| / mean``; NaN with fewer than two values.
        worst: the lowest value.
        ratio: max / min of ``values``; NaN with fewer than two values.
    """

    values: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    too_small: list[str] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)
    unknown: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: float = float("nan")
    gap: float = float("nan")
    worst: float = float("nan")
    ratio: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubgroupReport:
        """The report :meth:`as_dict` gave, read back from JSON (``null`` -> NaN, ``"inf"`` ->
        inf; keys it does not know are ignored)."""

        def number(v: Any) -> float:
            return math.nan if v is None else float(v)

        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        for k in ("mean", "gap", "worst", "ratio"):
            if k in kw:
                kw[k] = number(kw[k])
        for k in ("values", "unknown"):
            if k in kw:
                kw[k] = {g: number(v) for g, v in kw[k].items()}
        if "per_label" in kw:
            kw["per_label"] = {
                g: {n: number(v) for n, v in per.items()} for g, per in kw["per_label"].items()
            }
        return cls(**kw)


def subgroup_gaps(
    probs: torch.Tensor,
    target: torch.Tensor,
    groups: Mapping[str, Sequence[Any]],
    metric: MetricName = "auroc",
    min_size: int = 30,
    include_unknown: bool = False,
    label_names: Sequence[str] | None = None,
) -> dict[str, SubgroupReport]:
    """Metric per subgroup and the gaps between subgroups, for each attribute in ``groups``.

    Args:
        probs: ``(N, K)`` probabilities.
        target: ``(N, K)`` targets (NaN = unknown for ``auroc``; one-hot / soft for ``accuracy``).
        groups: attribute -> the N cases' subgroup labels.
        metric: ``auroc`` (per label, then the mean over the labels defined in every compared
            subgroup: ``labels`` of the report), ``accuracy`` (top-1 against the target's
            argmax) or ``dice`` (``probs`` are per-case Dice scores ``(N, K)``, ``target`` is
            unused: the mean over the subgroup's cases, then over classes).
        min_size: subgroups with fewer cases are reported as too small.
        include_unknown: let the unknown-attribute subgroup (:data:`UNKNOWN_GROUPS`) join the
            values, mean and gap like any other; by default it is scored apart (``unknown``).
        label_names: the K label names of ``labels`` / ``per_label`` (default ``"0"`` ...).
    """
    names = (
        list(label_names) if label_names is not None else [str(k) for k in range(probs.shape[1])]
    )
    out: dict[str, SubgroupReport] = {}
    for attribute, labels in groups.items():
        labels = [str(v) for v in labels]
        if len(labels) != len(probs):
            raise ValueError(
                f"groups[{attribute!r}] has {len(labels)} entries for {len(probs)} cases"
            )
        report = SubgroupReport()
        scores: dict[str, float] = {}
        per_label: dict[str, torch.Tensor] = {}
        apart: set[str] = set()
        for name in sorted(set(labels)):
            rows = torch.tensor([lab == name for lab in labels])
            report.sizes[name] = int(rows.sum())
            if not include_unknown and name.strip().lower() in UNKNOWN_GROUPS:
                apart.add(name)
            if report.sizes[name] < min_size:
                report.too_small.append(name)
                scores[name] = math.nan
                continue
            if metric == "auroc":
                per_label[name] = masked_multilabel_auroc(probs[rows], target[rows]).double()
                report.per_label[name] = dict(zip(names, per_label[name].tolist(), strict=True))
            else:
                scores[name] = METRICS[metric](probs[rows], target[rows])
        if metric == "auroc":
            # the labels defined in every compared subgroup (a subgroup with none is undefined)
            compared = [g for g, v in per_label.items() if g not in apart and not v.isnan().all()]
            common = torch.zeros(len(names), dtype=torch.bool)
            if compared:
                common = torch.stack([~per_label[g].isnan() for g in compared]).all(dim=0)
            report.labels = [n for n, c in zip(names, common.tolist(), strict=True) if c]
            for g, v in per_label.items():  # a group kept apart (unknown) may lack some
                mean = v[common].nanmean() if g in apart else v[common].mean()
                scores[g] = float(mean) if common.any() else math.nan
        for name, value in scores.items():
            if name in report.too_small:
                pass
            elif math.isnan(value):
                report.undefined.append(name)
            elif name not in apart:
                report.values[name] = value
            if name in apart:
                report.unknown[name] = value
        if report.values:
            vals = torch.tensor(list(report.values.values()), dtype=torch.float64)
            report.mean = float(vals.mean())
            report.worst = float(vals.min())
            if len(vals) > 1:
                report.gap = float((vals - vals.mean()).abs().max() / vals.mean())
                report.ratio = float(vals.max() / vals.min()) if vals.min() > 0 else math.inf
        out[attribute] = report
    return out


def _code(name: str) -> int:
    return zlib.crc32(name.encode())


class SubgroupMetrics(Metric):
    """:func:`subgroup_gaps` as a Metric; ``update(probs, target, groups)`` with ``groups`` an
    attribute -> list of B labels (the batch contract's ``groups``); ``label_names`` name the
    labels of an ``auroc`` report."""

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        attributes: Sequence[str],
        metric: MetricName = "auroc",
        min_size: int = 30,
        include_unknown: bool = False,
        label_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.attributes = list(attributes)
        self.label_names = list(label_names) if label_names is not None else None
        self.metric: MetricName = metric
        self.min_size = min_size
        self.include_unknown = include_unknown
        self.names: dict[int, str] = {}
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        for a in self.attributes:
            self.add_state(f"codes_{a}", default=[], dist_reduce_fx="cat")

    def update(
        self,
        probs: torch.Tensor,
        target: torch.Tensor | None,
        groups: Mapping[str, Sequence[Any]],
    ) -> None:
        """Add a batch: ``probs`` and ``target`` as in :func:`subgroup_gaps` (``target`` None
        for ``dice``, whose ``probs`` are already per-case scores)."""
        self.probs.append(probs.detach().float())
        self.target.append(
            probs.new_zeros(len(probs), 0) if target is None else target.detach().float()
        )
        for a in self.attributes:
            if a not in groups:
                raise KeyError(f"batch groups have no attribute {a!r}; they have {sorted(groups)}")
            labels = [str(v) for v in groups[a]]
            self.names.update({_code(n): n for n in labels})
            getattr(self, f"codes_{a}").append(
                torch.tensor([_code(n) for n in labels], dtype=torch.int64, device=self.device)
            )

    def _all_names(self) -> dict[int, str]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            tables: list[dict[int, str]] = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(tables, self.names)
            return {k: v for t in tables for k, v in t.items()}
        return dict(self.names)

    def compute(self) -> dict[str, SubgroupReport]:
        names = self._all_names()
        probs, target = dim_zero_cat(self.probs).cpu(), dim_zero_cat(self.target).cpu()
        groups = {
            a: [names[int(c)] for c in dim_zero_cat(getattr(self, f"codes_{a}")).cpu()]
            for a in self.attributes
        }
        return subgroup_gaps(
            probs,
            target,
            groups,
            self.metric,
            self.min_size,
            self.include_unknown,
            self.label_names,
        )
