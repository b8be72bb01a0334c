"""Shared machinery of the analysis callbacks: the run folder, JSON output, and per-evaluation-set
metrics fed from the batch contract's step outputs."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import Metric
from typing_extensions import override

from medxfer import artifacts
from medxfer.naming import eval_prefix

__all__ = ["EvalSetCallback", "analysis_dir", "is_last_validation", "run_folder", "write_json"]


def run_folder(trainer: L.Trainer) -> Path:
    """The run folder as global rank zero sees it: the logger's version folder when there is
    a logger, else ``default_root_dir``. This is ``trainer.log_dir``'s rule without its
    broadcast, which waits for every rank: results and analyses are written on rank zero only,
    so asking there alone would leave a DDP run waiting forever."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    root = None
    if trainer.loggers:
        first = trainer.loggers[0]
        root = (
            first.log_dir if isinstance(first, (CSVLogger, TensorBoardLogger)) else first.save_dir
        )
    return Path(root or trainer.default_root_dir)


def analysis_dir(trainer: L.Trainer) -> Path:
    """``<run folder>/analysis`` (:func:`run_folder`; ask on global rank zero)."""
    return run_folder(trainer) / artifacts.ANALYSIS_DIR


def write_json(trainer: L.Trainer, filename: str, data: Any) -> Path | None:
    """Write ``data`` as strict JSON to ``analysis/<filename>`` (a name from
    :mod:`medxfer.artifacts`) on global rank zero; returns the path there."""
    if not trainer.is_global_zero:
        return None
    return artifacts.write_json(analysis_dir(trainer) / filename, data)


def is_last_validation(trainer: L.Trainer) -> bool:
    """Whether the validation running now is the last of fitting: in the last epoch of an
    epoch-bounded run, or once ``global_step`` reached ``max_steps`` (a step-bounded run, whose
    ``max_epochs`` is -1 or None). A run stopped early (e.g. by EarlyStopping) cannot know."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    by_epochs = max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs
    by_steps = max_steps not in (None, -1) and trainer.global_step >= max_steps
    return by_epochs or by_steps


class EvalSetCallback(Callback):
    """Base of callbacks that accumulate a Metric per evaluation set from step outputs
    (``probs``, ``target``, ``groups``, ``set``) and report it at the end of the epoch.

    Subclasses implement :meth:`make_metric`, :meth:`update` and :meth:`report`. States are
    torchmetrics states, reduced across DDP ranks by ``compute``.

    Args:
        every_n_epochs: report validation in every N-th epoch and at the last validation of
            fitting (:func:`is_last_validation`); a test or a standalone ``validate`` always.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self._metrics: dict[str, Metric] = {}

    @abstractmethod
    def make_metric(self, pl_module: L.LightningModule) -> Metric:
        """A fresh Metric for one evaluation set."""

    @abstractmethod
    def update(self, metric: Metric, outputs: dict[str, Any]) -> None:
        """Feed one step's outputs to ``metric``."""

    @abstractmethod
    def report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, metric: Metric
    ) -> None:
        """Compute ``metric`` (every rank) and log / write it."""

    def _active(self, trainer: L.Trainer, stage: str) -> bool:
        if trainer.sanity_checking:
            return False
        if stage == "test" or trainer.state.fn != TrainerFn.FITTING:
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0 or is_last_validation(trainer)

    @staticmethod
    def _prefix(outputs: dict[str, Any], stage: str, idx: int) -> str:
        """The logging prefix of the evaluation set a step's ``outputs`` came from."""
        return eval_prefix(stage, str(outputs.get("set", "val" if stage == "val" else f"set{idx}")))

    def _on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, stage: str, idx: int
    ) -> None:
        if (
            not self._active(trainer, stage)
            or not isinstance(outputs, dict)
            or "probs" not in outputs
        ):
            return
        prefix = self._prefix(outputs, stage, idx)
        if prefix not in self._metrics:
            self._metrics[prefix] = self.make_metric(pl_module).to(pl_module.device)
        with torch.no_grad():
            self.update(self._metrics[prefix], outputs)

    def _on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for prefix in [p for p in self._metrics if p.split("/")[0] == stage]:
            metric = self._metrics.pop(prefix)
            with torch.no_grad():
                self.report(trainer, pl_module, prefix, metric)

    @override
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._on_batch_end(trainer, pl_module, outputs, "val", dataloader_idx)

    @override
    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._on_batch_end(trainer, pl_module, outputs, "test", dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._on_epoch_end(trainer, pl_module, "val")

    @override
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._on_epoch_end(trainer, pl_module, "test")
