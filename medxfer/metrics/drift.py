"""How far a fine-tuned backbone's weights moved from their initialisation, per stage and block.

Mustafa et al. (2021) measure feature reuse by the mean absolute change of the convolution
kernels, ``mean |w - w0|`` over every kernel element of a block (the l1 distance normalised by
kernel size); the relative l2 change ``||w - w0|| / ||w0||`` is reported beside it (Neyshabur et
al., "What is being transferred in transfer learning?", NeurIPS 2020). Stages come from the
backbone's declared ``feature_info`` (the caller passes the parameter -> stage map,
:func:`medxfer.backbones.parameter_stages`: metrics know no model); blocks are the children of
a stage module.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from medxfer.artifacts import DRIFT_L1

__all__ = ["stage_drift", "weight_drift"]

_STAGE, _BLOCK = "stage/", "block/"


@torch.no_grad()
def weight_drift(
    model: nn.Module, initial: dict[str, torch.Tensor], stages: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Drift of the conv kernels (4-D weights) of ``model`` from ``initial``.

    Args:
        model: a backbone.
        initial: its parameters at initialisation (``name -> tensor``).
        stages: parameter name -> the stage module owning it (parameters absent: ``head``),
            e.g. :func:`medxfer.backbones.parameter_stages` of a backbone declaring
            ``feature_info``.

    Returns:
        ``{group: {"l1": mean |w - w0|, "rel_l2": ||w - w0|| / ||w0||, "n": elements}}`` for every
        stage (``stage/<module>``) and block (``block/<module>.<child>``).
    """
    sums: dict[str, list[float]] = {}
    for name, p in model.named_parameters():
        if p.ndim != 4 or name not in initial:
            continue
        delta = p.detach().float() - initial[name].to(p.device).float()
        stage = stages.get(name, "head")
        groups = [f"{_STAGE}{stage}"]
        if name.startswith(stage + ".") and stage != "head":
            child = name[len(stage) + 1 :].split(".")
            if (
                child[0] == "blocks" and len(child) > 2
            ):  # timm ResNetV2 / ConvNeXt: stages.i.blocks.j
                groups.append(f"{_BLOCK}{stage}.blocks.{child[1]}")
            elif len(child) > 1:
                groups.append(f"{_BLOCK}{stage}.{child[0]}")
        for g in groups:
            s = sums.setdefault(g, [0.0, 0.0, 0.0, 0.0])
            s[0] += delta.abs().sum().item()
            s[1] += delta.pow(2).sum().item()
            s[2] += initial[name].float().pow(2).sum().item()
            s[3] += delta.numel()
    return {
        g: {
            DRIFT_L1: s[0] / s[3],
            "rel_l2": (s[1] ** 0.5) / max(s[2] ** 0.5, 1e-12),
            "n": int(s[3]),
        }
        for g, s in sums.items()
    }


def stage_drift(drift: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The per-stage entries of :func:`weight_drift`'s result, keyed by stage name
    (``"stage/layer2"`` -> ``"layer2"``), in the result's order."""
    return {g[len(_STAGE) :]: v for g, v in drift.items() if g.startswith(_STAGE)}
