"""Names of logged quantities, shared by tasks and callbacks so that every number of one
evaluation set lands under one prefix: ``val/...`` for the validation set, ``test/<set>/...``
for each test set (``test/chexpert/auroc_mean``, ``test/nih/ece``)."""

from __future__ import annotations

__all__ = ["POSITIVES", "SUBGROUP", "SUBGROUP_SUMMARY", "eval_prefix"]

#: ``<prefix>/positives/<label>``: positive cases among a label's known ones (beside
#: ``<prefix>/auroc/<label>``).
POSITIVES = "positives"
#: ``<prefix>/subgroup/<attribute>/<summary or group>``: a subgroup analysis.
SUBGROUP = "subgroup"
#: The summary of one attribute's subgroups (fields of :class:`medxfer.metrics.SubgroupReport`).
SUBGROUP_SUMMARY = ("mean", "gap", "worst", "ratio")


def eval_prefix(stage: str, set_name: str) -> str:
    """The key prefix of evaluation set ``set_name`` in ``stage`` (``"val"`` or ``"test"``)."""
    if stage == "val":
        return "val" if set_name == "val" else f"val/{set_name}"
    return f"{stage}/{set_name}"
