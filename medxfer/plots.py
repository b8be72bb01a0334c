"""Figures of the analyses: reliability diagrams, CKA against depth, weight drift per block.
Matplotlib with the Agg backend, written as PNG files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from medxfer import artifacts
from medxfer.metrics import stage_drift

__all__ = ["plot_cka_vs_depth", "plot_drift_per_block", "plot_reliability"]


def plot_reliability(
    bins: Mapping[str, torch.Tensor], ece: float, title: str, path: str | os.PathLike[str]
) -> None:
    """Reliability diagram: mean outcome against mean confidence per bin, bar width by count."""
    n = len(bins["count"])
    edges = torch.linspace(0, 1, n + 1)
    fig, (ax, hx) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ok = bins["count"] > 0
    ax.bar(
        edges[:-1][ok],
        bins["outcome"][ok],
        width=1 / n,
        align="edge",
        alpha=0.7,
        edgecolor="k",
        label="observed",
    )
    ax.plot(bins["confidence"][ok], bins["outcome"][ok], "o", ms=3, color="C3")
    ax.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title=f"{title}  (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    hx.bar(edges[:-1], bins["count"], width=1 / n, align="edge", color="grey")
    hx.set(xlabel="predicted probability", ylabel="count")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_cka_vs_depth(history: Sequence[Mapping], path: str | os.PathLike[str]) -> None:
    """CKA between initial and current features at each stage, one line per record of
    ``cka.json``'s history (``{"when", "epoch", "step", "cka": {stage: value}}``)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for rec in history:
        cka = rec[artifacts.CKA]
        ax.plot(
            range(len(cka)),
            list(cka.values()),
            "o-",
            label=f"{rec[artifacts.WHEN]} (epoch {rec[artifacts.EPOCH]})",
        )
    if history:
        stages = list(history[-1][artifacts.CKA])
        ax.set_xticks(range(len(stages)), stages, rotation=30, ha="right", fontsize=8)
    ax.set(
        ylabel="linear CKA to initial", ylim=(0, 1.05), title="feature similarity to initialisation"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_drift_per_block(
    drift: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str]
) -> None:
    """Mean |w - w0| of the conv kernels of each block, shallow to deep (each stage when
    ``drift``, a :func:`medxfer.metrics.weight_drift` result, has no blocks)."""
    stages = stage_drift(drift)
    # weight_drift's entries are "<stage or block>/<module>"; those not stages are blocks
    blocks = {
        name: v for key, v in drift.items() if (name := key.split("/", 1)[1]) not in stages
    } or stages
    fig, ax = plt.subplots(figsize=(max(5, 0.18 * len(blocks)), 3.5))
    ax.bar(range(len(blocks)), [v["l1"] for v in blocks.values()], color="C0")
    ax.set_xticks(range(len(blocks)), list(blocks), rotation=90, fontsize=6)
    ax.set(ylabel="mean |w - w0|", title="weight drift per block")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
