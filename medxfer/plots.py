"""Figures of the analyses: reliability diagrams, CKA against depth, weight drift per block,
and the one way every figure of the analyses and of ``medxfer report`` is saved
(:func:`saved_figure`). Matplotlib with the Agg backend, written as PNG files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from medxfer import artifacts
from medxfer.metrics import stage_drift

__all__ = [
    "plot_cka_vs_depth",
    "plot_drift_per_block",
    "plot_reliability",
    "plot_reliability_per_label",
    "saved_figure",
]

#: Resolution of every saved figure.
_DPI = 120


@contextlib.contextmanager
def saved_figure(path: str | os.PathLike[str], **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A new figure to draw on, saved to ``path`` when the block ends.

    On leaving the block the layout is tightened and the figure written atomically
    (:func:`medxfer.artifacts.atomic_path`: a reader never sees half a PNG); the figure is closed
    either way, so an error while drawing leaks no figure (pyplot keeps every open one).

    Args:
        path: the PNG file to write.
        **subplots: passed to :func:`matplotlib.pyplot.subplots` (``figsize``, ``nrows``...).

    Yields:
        ``(figure, axes)`` as :func:`matplotlib.pyplot.subplots` returns them.
    """
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        with artifacts.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=_DPI)
    finally:
        plt.close(fig)


def plot_reliability(
    bins: Mapping[str, torch.Tensor], ece: float, title: str, path: str | os.PathLike[str]
) -> None:
    """Reliability diagram: mean outcome against mean confidence per bin, bar width by count."""
    n = len(bins["count"])
    edges = torch.linspace(0, 1, n + 1)
    with saved_figure(
        path, nrows=2, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    ) as (_, (ax, hx)):
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
        ax.set(
            ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title=f"{title}  (ECE {ece:.3f})"
        )
        ax.legend(loc="upper left", fontsize=8)
        hx.bar(edges[:-1], bins["count"], width=1 / n, align="edge", color="grey")
        hx.set(xlabel="predicted probability", ylabel="count")


def plot_reliability_per_label(
    curves: Mapping[str, Mapping[str, Mapping[str, Any]]],
    ece: Mapping[str, Mapping[str, float]],
    title: str,
    path: str | os.PathLike[str],
) -> None:
    """One small reliability diagram per label, four to a row, with one curve (mean outcome
    against mean confidence over the non-empty bins) per entry of ``curves``.

    Args:
        curves: curve name (an evaluation set, a configuration) -> label -> ``{"count",
            "confidence", "outcome"}`` per bin, as :func:`medxfer.metrics.reliability_bins`
            gives for one label.
        ece: curve name -> label -> its ECE, shown in the legend.
        title: the figure's title.
        path: the PNG file to write.
    """
    labels = list(dict.fromkeys(label for c in curves.values() for label in c))
    ncols = min(4, max(1, len(labels)))
    nrows = max(1, -(-len(labels) // ncols))
    with saved_figure(
        path, nrows=nrows, ncols=ncols, figsize=(2.8 * ncols, 2.8 * nrows), squeeze=False
    ) as (fig, axes):
        for ax in axes.flat[len(labels) :]:
            ax.set_visible(False)
        for ax, label in zip(axes.flat, labels, strict=False):
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            for name, per_label in curves.items():
                if label not in per_label:
                    continue
                b = {
                    k: torch.as_tensor(v, dtype=torch.float64) for k, v in per_label[label].items()
                }
                ok = b["count"] > 0
                e = ece.get(name, {}).get(label, float("nan"))
                ax.plot(
                    b["confidence"][ok],
                    b["outcome"][ok],
                    "o-",
                    ms=2.5,
                    lw=1,
                    label=f"{name} ({e:.3f})",
                )
            ax.set(xlim=(0, 1), ylim=(0, 1), title=label)
            ax.title.set_fontsize(8)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=5, title="ECE", title_fontsize=5, loc="upper left")
        fig.suptitle(title, fontsize=9)
        fig.supxlabel("predicted probability", fontsize=8)
        fig.supylabel("observed frequency", fontsize=8)


def plot_cka_vs_depth(history: Sequence[Mapping], path: str | os.PathLike[str]) -> None:
    """CKA between initial and current features at each stage, one line per record of
    ``cka.json``'s history (``{"when", "epoch", "step", "cka": {stage: value}}``)."""
    with saved_figure(path, figsize=(5, 3.5)) as (_, ax):
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
            ylabel="linear CKA to initial",
            ylim=(0, 1.05),
            title="feature similarity to initialisation",
        )
        ax.legend(fontsize=7)


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
    with saved_figure(path, figsize=(max(5, 0.18 * len(blocks)), 3.5)) as (_, ax):
        ax.bar(range(len(blocks)), [v[artifacts.DRIFT_L1] for v in blocks.values()], color="C0")
        ax.set_xticks(range(len(blocks)), list(blocks), rotation=90, fontsize=6)
        ax.set(ylabel="mean |w - w0|", title="weight drift per block")
