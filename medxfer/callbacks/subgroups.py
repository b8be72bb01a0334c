"""Subgroup callback: the task's metric per subgroup of each attribute (sex, age bin, view,
density, skin type...) and the paper's gap; ECE, TPR at a fixed specificity and the equalised-odds
gap (Hardt et al., NeurIPS 2016) per attribute; logged and written as JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L

from medxfer import artifacts
from medxfer.artifacts import ECE
from medxfer.errors import ConfigError
from medxfer.metrics import SubgroupMetrics
from medxfer.naming import SUBGROUP, SUBGROUP_SUMMARY

from .base import EvalSetCallback, write_json

__all__ = ["SubgroupCallback"]

#: Logged keys of the fairness figures (the :class:`~medxfer.metrics.SubgroupReport` fields).
EQUALIZED_ODDS_GAP, TPR_AT_SPECIFICITY = "equalized_odds_gap", "tpr_at_specificity"


class SubgroupCallback(EvalSetCallback):
    """Per evaluation set and attribute: ``<prefix>/subgroup/<attr>/gap``, ``.../worst``,
    ``.../ratio``, ``.../mean`` and ``.../<group>`` values; ``analysis/subgroups_<set>.json``
    with sizes and the subgroups too small to report. A gap needs two scored subgroups (else it
    is NaN, ``n/a``). A multi-label AUROC is averaged over the labels defined in every compared
    subgroup; the JSON names them (``labels``) and holds each subgroup's per-label AUROC
    (``per_label``).

    For probabilities (not Dice) it also logs, per attribute, ``.../equalized_odds_gap`` and per
    scored subgroup ``.../ece/<group>`` and ``.../tpr_at_specificity/<group>``; the JSON holds
    each subgroup's TPR / FPR at the shared threshold and every label's operating points (see
    :mod:`medxfer.metrics.subgroups`). All come from the same gathered predictions as the
    gaps: exact under DDP.

    Args:
        attributes: batch ``groups`` keys to analyse (default: all the batch has).
        metric: ``auto`` (AUROC for multi-label tasks, accuracy for multi-class, Dice for
            segmentation: the mean of each image's Dice, the task's ``dice`` step output),
            ``auroc``, ``accuracy`` or ``dice``.
        min_size: subgroups with fewer cases are reported as too small, not scored.
        every_n_epochs: validation reporting period.
        include_unknown: let the cases whose attribute is unknown (``unknown``, e.g. an age not
            recorded) join the gap as a subgroup; by default they are scored apart
            (``.../<attr>/unknown`` is still logged when it can be scored).
        specificity: the specificity of the operating points (TPR at it per subgroup; the
            shared threshold of the equalised-odds gap); ``null``: none, and no ECE per subgroup.
        n_bins: equal-width bins of the ECE per subgroup (as :class:`CalibrationCallback`'s).
    """

    def __init__(
        self,
        attributes: Sequence[str] | None = None,
        metric: Literal["auto", "auroc", "accuracy", "dice"] = "auto",
        min_size: int = 30,
        every_n_epochs: int = 1,
        include_unknown: bool = False,
        specificity: float | None = 0.9,
        n_bins: int = 15,
    ) -> None:
        super().__init__(every_n_epochs)
        if specificity is not None and not 0 <= specificity <= 1:
            raise ConfigError(f"SubgroupCallback: specificity={specificity} must be in [0, 1]")
        self.specificity = specificity
        self.n_bins = n_bins
        self.attributes = list(attributes) if attributes is not None else None
        self.metric = metric
        self.min_size = min_size
        self.include_unknown = include_unknown
        self._seen: list[str] = []

    def make_metric(self, pl_module: L.LightningModule) -> SubgroupMetrics:
        metric = self.metric
        if metric == "auto":
            output_type = getattr(pl_module, "output_type", "multilabel")
            metric = {"multiclass": "accuracy", "segmentation": "dice"}.get(output_type, "auroc")
        names = getattr(pl_module, "label_names", None)
        return SubgroupMetrics(
            self.attributes or self._seen,
            metric,
            self.min_size,
            self.include_unknown,
            label_names=list(names) if names else None,
            specificity=self.specificity,
            n_bins=self.n_bins,
        )

    def _on_batch_end(self, trainer, pl_module, outputs, stage, idx) -> None:
        if self.attributes is None and isinstance(outputs, dict) and not self._seen:
            self._seen = sorted(outputs.get("groups", {}))
        super()._on_batch_end(trainer, pl_module, outputs, stage, idx)

    def update(self, metric: SubgroupMetrics, outputs: dict[str, Any]) -> None:
        if metric.metric == "dice":  # per-case scores, not probabilities
            if "dice" not in outputs:
                raise ValueError(
                    "subgroup metric dice needs the task's per-case 'dice' step output (Segmenter)"
                )
            metric.update(outputs["dice"], None, outputs["groups"])
        else:
            metric.update(outputs["probs"], outputs["target"], outputs["groups"])

    def report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, metric: SubgroupMetrics
    ) -> None:
        reports = metric.compute()
        logged = {}
        for attr, rep in reports.items():
            base = f"{prefix}/{SUBGROUP}/{attr}"
            logged.update({f"{base}/{k}": getattr(rep, k) for k in SUBGROUP_SUMMARY})
            scored = rep.values | {g: v for g, v in rep.unknown.items() if not math.isnan(v)}
            logged.update({f"{base}/{g}": v for g, v in scored.items()})
            if not math.isnan(rep.specificity):
                logged[f"{base}/{EQUALIZED_ODDS_GAP}"] = rep.equalized_odds_gap
                for key in (ECE, TPR_AT_SPECIFICITY):
                    logged.update({f"{base}/{key}/{g}": v for g, v in getattr(rep, key).items()})
        pl_module.log_dict({k: float(v) for k, v in logged.items()}, add_dataloader_idx=False)
        write_json(
            trainer,
            artifacts.subgroups_json(prefix),
            {
                artifacts.EPOCH: trainer.current_epoch,
                "metric": metric.metric,
                "min_size": self.min_size,
                "include_unknown": self.include_unknown,
                "specificity": self.specificity,
                artifacts.ATTRIBUTES: {a: r.as_dict() for a, r in reports.items()},
            },
        )
