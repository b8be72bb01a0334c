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

Beyond the gaps (for probabilities: the ``auroc`` and ``accuracy`` metrics, not ``dice``), each
report holds per scored subgroup its expected calibration error (:func:`expected_calibration_error`
on the subgroup's cases: multi-label ECE for ``auroc``, top-label ECE for ``accuracy``) and its
operating points, label by label (one-vs-rest per class for ``accuracy``):

* **TPR at a fixed specificity** (:func:`tpr_at_specificity`): the subgroup's largest
  sensitivity among thresholds whose specificity on the subgroup's own negatives is at least
  ``specificity`` (e.g. 0.9) -- its discrimination at a clinically fixed false-alarm rate.
* **Equalised odds** (Hardt, Price and Srebro, "Equality of Opportunity in Supervised Learning",
  NeurIPS 2016): a classifier satisfies it when its TPR and FPR are equal across subgroups. At
  one shared threshold per label -- the one :func:`tpr_at_specificity` picks on *all* cases of
  the set, the operating point a deployment would use -- each subgroup's TPR and FPR are
  measured, and the gap (:func:`equalized_odds_gap`) is ``max(max_g TPR_g - min_g TPR_g,
  max_g FPR_g - min_g FPR_g)`` over the compared subgroups (fairlearn's
  ``equalized_odds_difference``).

These are averaged over the labels with positives and negatives in every compared subgroup
(``operating_labels``), as AUROC is.

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

from .calibration import expected_calibration_error
from .classification import masked_multilabel_auroc

__all__ = [
    "UNKNOWN_GROUPS",
    "SubgroupMetrics",
    "SubgroupReport",
    "equalized_odds_gap",
    "rates_at_threshold",
    "subgroup_gaps",
    "tpr_at_specificity",
]

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
        specificity: the specificity of the operating points (NaN when none were computed).
        ece: ECE per scored subgroup (unknown ones included).
        operating_labels: the labels the operating points below average: those with positives
            and negatives in every compared subgroup.
        tpr_at_specificity: per scored subgroup, the mean over ``operating_labels`` of its TPR
            at its own threshold of specificity ``specificity``.
        tpr, fpr: per scored subgroup, the mean over ``operating_labels`` of its TPR / FPR at
            the shared thresholds.
        equalized_odds_gap: the mean over ``operating_labels`` of the per-label gap.
        thresholds: label -> the shared threshold (all cases, specificity ``specificity``).
        operating_points: label -> ``{"equalized_odds_gap": gap, "tpr_at_specificity":
            {group: v}, "tpr": {group: v}, "fpr": {group: v}}``.
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
    specificity: float = float("nan")
    ece: dict[str, float] = field(default_factory=dict)
    operating_labels: list[str] = field(default_factory=list)
    tpr_at_specificity: dict[str, float] = field(default_factory=dict)
    tpr: dict[str, float] = field(default_factory=dict)
    fpr: dict[str, float] = field(default_factory=dict)
    equalized_odds_gap: float = float("nan")
    thresholds: dict[str, float] = field(default_factory=dict)
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

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

        def numbers(v: Any) -> Any:  # a number, or a (nested) dict of numbers
            return {k: numbers(x) for k, x in v.items()} if isinstance(v, dict) else number(v)

        for k in ("mean", "gap", "worst", "ratio", "specificity", "equalized_odds_gap"):
            if k in kw:
                kw[k] = number(kw[k])
        dicts = ("values", "unknown", "per_label", "ece", "tpr_at_specificity", "tpr", "fpr")
        for k in (*dicts, "thresholds", "operating_points"):
            if k in kw:
                kw[k] = numbers(kw[k])
        return cls(**kw)


def tpr_at_specificity(
    scores: torch.Tensor, target: torch.Tensor, specificity: float = 0.9
) -> tuple[float, float]:
    """The true-positive rate at a fixed specificity, and its threshold.

    Cases whose score is ``>= threshold`` are called positive. Of the thresholds whose
    specificity (the fraction of negatives scored below it) is at least ``specificity``, the
    lowest is taken: it gives the largest TPR at that specificity. The candidates are the
    distinct scores (and ``inf``, which calls nothing positive: TPR 0, specificity 1), so tied
    scores always fall on the same side. The ROC points come from
    :func:`sklearn.metrics.roc_curve` (every point kept: ``drop_intermediate=False``).

    Args:
        scores: ``(N,)`` scores (probabilities or logits).
        target: ``(N,)`` 0/1 targets, NaN = unknown (skipped).
        specificity: the specificity to hold, in ``[0, 1]``.

    Returns:
        ``(tpr, threshold)``; NaN, NaN without a positive or a negative.

    Example:
        >>> s = torch.tensor([0.1, 0.4, 0.5, 0.35, 0.45, 0.8], dtype=torch.float64)
        >>> y = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
        >>> tpr_at_specificity(s, y, 0.6)  # one negative of three may score >= the threshold
        (0.6666666666666666, 0.45)
    """
    from sklearn.metrics import roc_curve

    if not 0 <= specificity <= 1:
        raise ValueError(f"specificity must be in [0, 1], got {specificity}")
    known = ~torch.isnan(target)
    s, y = scores[known].double().cpu().numpy(), target[known].cpu().numpy()
    if not ((y == 1).any() and (y == 0).any()):
        return math.nan, math.nan
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    # fpr and tpr rise as the threshold falls: the last point within the allowed FPR is best
    i = int((fpr <= 1 - specificity + 1e-12).nonzero()[0][-1])
    return float(tpr[i]), float(thresholds[i])


def rates_at_threshold(
    scores: torch.Tensor, target: torch.Tensor, threshold: float
) -> tuple[float, float]:
    """``(TPR, FPR)`` when cases scored ``>= threshold`` are called positive (NaN target =
    unknown, skipped; a rate without cases to count is NaN)."""
    known = ~torch.isnan(target)
    called, y = scores[known] >= threshold, target[known]
    pos, neg = y == 1, y == 0
    tpr = float(called[pos].double().mean()) if pos.any() else math.nan
    fpr = float(called[neg].double().mean()) if neg.any() else math.nan
    return tpr, fpr


def equalized_odds_gap(
    scores: torch.Tensor, target: torch.Tensor, groups: Sequence[Any], threshold: float
) -> float:
    """The equalised-odds gap of a thresholded score across subgroups (Hardt et al., 2016).

    Equalised odds holds when the prediction ``score >= threshold`` has the same true-positive
    and the same false-positive rate in every subgroup. The gap is the larger of the two
    spreads, ``max(max_g TPR_g - min_g TPR_g, max_g FPR_g - min_g FPR_g)`` (fairlearn's
    ``equalized_odds_difference``), over the subgroups that have positives and negatives.

    Args:
        scores: ``(N,)`` scores.
        target: ``(N,)`` 0/1 targets, NaN = unknown.
        groups: the N cases' subgroups.
        threshold: the shared threshold (e.g. :func:`tpr_at_specificity`'s on all cases).

    Returns:
        The gap; NaN with fewer than two such subgroups.

    Example:
        >>> s = torch.tensor([0.9, 0.2, 0.6, 0.9, 0.4, 0.3])
        >>> y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
        >>> # a: TPR 1, FPR 1/2; b: TPR 1/2, FPR 0 -> max(1/2, 1/2)
        >>> equalized_odds_gap(s, y, ["a", "a", "a", "b", "b", "b"], 0.5)
        0.5
    """
    labels = [str(g) for g in groups]
    rates = []
    for name in sorted(set(labels)):
        rows = torch.tensor([lab == name for lab in labels])
        tpr, fpr = rates_at_threshold(scores[rows], target[rows], threshold)
        if not (math.isnan(tpr) or math.isnan(fpr)):
            rates.append((tpr, fpr))
    return _odds_gap(rates)


def _odds_gap(rates: Sequence[tuple[float, float]]) -> float:
    """``max`` of the TPR spread and the FPR spread of ``(tpr, fpr)`` pairs (NaN under two)."""
    if len(rates) < 2:
        return math.nan
    tprs, fprs = zip(*rates, strict=True)
    return max(max(tprs) - min(tprs), max(fprs) - min(fprs))


def _binary_columns(
    probs: torch.Tensor, target: torch.Tensor, metric: MetricName
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and 0/1 targets per label: multi-label as they are; multi-class one-vs-rest
    (the class is the target's argmax)."""
    if metric == "accuracy":
        onehot = torch.zeros_like(probs)
        onehot[torch.arange(len(probs)), target.argmax(dim=1)] = 1.0
        return probs, onehot
    return probs, target


def _operating_points(
    report: SubgroupReport,
    probs: torch.Tensor,
    target: torch.Tensor,
    rows: Mapping[str, torch.Tensor],
    compared: Sequence[str],
    metric: MetricName,
    names: Sequence[str],
    specificity: float,
    n_bins: int,
) -> None:
    """Fill ``report``'s ECE per subgroup and operating points (see the module docstring) for
    the scored subgroups ``rows`` (group -> row mask), the gap over ``compared`` ones."""
    report.specificity = specificity
    task = "multiclass" if metric == "accuracy" else "multilabel"
    for g, r in rows.items():
        report.ece[g] = float(expected_calibration_error(probs[r], target[r], n_bins, task=task))
    scores, y = _binary_columns(probs, target, metric)

    def both(col: torch.Tensor) -> bool:
        return bool((col == 1).any() and (col == 0).any())

    common = [
        k for k in range(len(names)) if compared and all(both(y[rows[g], k]) for g in compared)
    ]
    report.operating_labels = [names[k] for k in common]
    own: dict[str, list[float]] = {g: [] for g in rows}
    shared: dict[str, list[tuple[float, float]]] = {g: [] for g in rows}
    gaps = []
    for k, label in enumerate(names):
        _, threshold = tpr_at_specificity(scores[:, k], y[:, k], specificity)
        report.thresholds[label] = threshold
        point: dict[str, Any] = {"tpr_at_specificity": {}, "tpr": {}, "fpr": {}}
        for g, r in rows.items():
            tpr_own = tpr_at_specificity(scores[r, k], y[r, k], specificity)[0]
            tpr, fpr = rates_at_threshold(scores[r, k], y[r, k], threshold)
            point["tpr_at_specificity"][g], point["tpr"][g], point["fpr"][g] = tpr_own, tpr, fpr
            if k in common:
                own[g].append(tpr_own)
                shared[g].append((tpr, fpr))
        gap = _odds_gap(
            [
                (point["tpr"][g], point["fpr"][g])
                for g in compared
                if not (math.isnan(point["tpr"][g]) or math.isnan(point["fpr"][g]))
            ]
        )
        point["equalized_odds_gap"] = gap
        report.operating_points[label] = point
        if k in common:
            gaps.append(gap)
    if common:
        for g in rows:
            report.tpr_at_specificity[g] = _nanmean(own[g])
            report.tpr[g] = _nanmean([t for t, _ in shared[g]])
            report.fpr[g] = _nanmean([f for _, f in shared[g]])
        report.equalized_odds_gap = _nanmean(gaps)


def _nanmean(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def subgroup_gaps(
    probs: torch.Tensor,
    target: torch.Tensor,
    groups: Mapping[str, Sequence[Any]],
    metric: MetricName = "auroc",
    min_size: int = 30,
    include_unknown: bool = False,
    label_names: Sequence[str] | None = None,
    specificity: float | None = 0.9,
    n_bins: int = 15,
) -> dict[str, SubgroupReport]:
    """Metric per subgroup and the gaps between subgroups, for each attribute in ``groups``;
    ECE and operating points per subgroup (see the module docstring).

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
        specificity: the specificity of the operating points (TPR at that specificity per
            subgroup; the shared threshold of the equalised-odds gap); ``None``: no ECE or
            operating points (never for ``dice``).
        n_bins: equal-width bins of the ECE per subgroup.
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
        scored_rows: dict[str, torch.Tensor] = {}
        for name in sorted(set(labels)):
            rows = torch.tensor([lab == name for lab in labels])
            report.sizes[name] = int(rows.sum())
            if not include_unknown and name.strip().lower() in UNKNOWN_GROUPS:
                apart.add(name)
            if report.sizes[name] < min_size:
                report.too_small.append(name)
                scores[name] = math.nan
                continue
            scored_rows[name] = rows
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
        if specificity is not None and metric != "dice":
            _operating_points(
                report,
                probs,
                target,
                scored_rows,
                list(report.values),
                metric,
                names,
                specificity,
                n_bins,
            )
        out[attribute] = report
    return out


def _code(name: str) -> int:
    return zlib.crc32(name.encode())


class SubgroupMetrics(Metric):
    """:func:`subgroup_gaps` as a Metric; ``update(probs, target, groups)`` with ``groups`` an
    attribute -> list of B labels (the batch contract's ``groups``); ``label_names`` name the
    labels of an ``auroc`` report; ``specificity`` and ``n_bins`` those of the ECE and operating
    points per subgroup."""

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        attributes: Sequence[str],
        metric: MetricName = "auroc",
        min_size: int = 30,
        include_unknown: bool = False,
        label_names: Sequence[str] | None = None,
        specificity: float | None = 0.9,
        n_bins: int = 15,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.attributes = list(attributes)
        self.specificity = specificity
        self.n_bins = n_bins
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
            self.specificity,
            self.n_bins,
        )
