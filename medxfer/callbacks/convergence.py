"""When did training converge? The step and epoch at which the monitored validation metric
first reached its best value, and first reached a fraction (default 99 %) of it -- the
convergence-speed comparison of Mustafa et al. (2021) and the epochs to converge of the
benchmark of Hosseinzadeh Taher et al. (2021), kept in ``results.json`` for the report."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
from typing_extensions import override

from medxfer import artifacts

from .base import write_json

__all__ = ["ConvergenceCallback"]


class ConvergenceCallback(L.Callback):
    """Track ``monitor`` after every validation; log ``convergence/best``,
    ``convergence/best_step``, ``convergence/step_at_fraction``, their epochs and
    ``convergence/epochs_to_best`` (:func:`medxfer.artifacts.convergence_key`); write
    ``analysis/convergence.json``. ``medxfer fit`` keeps the summary in ``results.json``
    (:meth:`results`). The history is part of the checkpoint, so a resumed run continues it.

    Args:
        monitor: a logged validation metric.
        mode: ``max`` or ``min``.
        fraction: the fraction of the best to report reaching (for ``min``: best / fraction).
    """

    def __init__(
        self,
        monitor: str = "val/auroc_mean",
        mode: Literal["max", "min"] = "max",
        fraction: float = 0.99,
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.fraction = fraction
        self.history: list[tuple[int, int, float]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict.get("history", [])]

    def summary(self) -> dict[str, float | int | None]:
        """Best value and where it, and ``fraction`` of it, were first reached (step and
        0-based epoch), and ``epochs_to_best``: the epochs trained by then (best epoch + 1)."""
        values = [(s, e, v) for s, e, v in self.history if not math.isnan(v)]
        if not values:
            return {}
        better = max if self.mode == "max" else min
        best = better(v for _, _, v in values)
        target = best * self.fraction if self.mode == "max" else best / self.fraction
        first_best = next((s, e) for s, e, v in values if v == best)
        reached = next(
            (s, e) for s, e, v in values if (v >= target if self.mode == "max" else v <= target)
        )
        return {
            "best": best,
            "best_step": first_best[0],
            "best_epoch": first_best[1],
            artifacts.EPOCHS_TO_BEST: first_best[1] + 1,
            "step_at_fraction": reached[0],
            "epoch_at_fraction": reached[1],
            "fraction": self.fraction,
        }

    def results(self) -> dict[str, float]:
        """The summary as ``results.json`` entries (:func:`medxfer.artifacts.convergence_key`);
        empty before any validation."""
        return {artifacts.convergence_key(k): float(v) for k, v in self.summary().items()}

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self.history.append(
            (
                trainer.global_step,
                trainer.current_epoch,
                float(trainer.callback_metrics[self.monitor]),
            )
        )
        summary = self.summary()
        if trainer.is_global_zero and summary:
            for logger in trainer.loggers:
                logger.log_metrics(self.results(), step=trainer.global_step)
        write_json(
            trainer,
            artifacts.CONVERGENCE_JSON,
            {
                "monitor": self.monitor,
                "mode": self.mode,
                **summary,
                artifacts.HISTORY: [
                    {artifacts.STEP: s, artifacts.EPOCH: e, "value": v} for s, e, v in self.history
                ],
            },
        )
