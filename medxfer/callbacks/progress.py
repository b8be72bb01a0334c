"""One progress line per training epoch, for consoles without a progress bar (CI logs, SLURM
output files, ``medxfer study`` replicas' ``log.txt``): epoch, optimizer step, the epoch's mean
training loss, the monitored validation metric and the time since the fit started."""

from __future__ import annotations

import logging
import sys
import time

import lightning as L
import torch
from typing_extensions import override

__all__ = ["EpochProgress", "console_is_terminal", "format_seconds"]

log = logging.getLogger(__name__)


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"2 h 03 min"``.

    Example:
        >>> format_seconds(42.4), format_seconds(185), format_seconds(7380)
        ('42 s', '3 min 05 s', '2 h 03 min')
    """
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class EpochProgress(L.Callback):
    """Log one line at the end of each training epoch (global rank zero), e.g.::

        medxfer: epoch 2/5  step 68  train/loss 0.612  val/auroc_mean 0.743  41 s

    The line is written through the ``medxfer`` logger (INFO; ``--quiet`` hides it) unless a
    progress bar is drawn on a terminal, which shows the same figures. ``medxfer fit`` adds
    this callback when a config lacks it.

    Args:
        monitor: the validation metric to show; default: the ``ModelCheckpoint``'s monitor,
            else ``val/loss``.
        loss: the training metric averaged over the epoch's steps.
    """

    def __init__(self, monitor: str | None = None, loss: str = "train/loss") -> None:
        self.monitor = monitor
        self.loss = loss
        self._start = time.monotonic()
        self._sum: torch.Tensor | None = None
        self._count = 0

    def _shown(self, trainer: L.Trainer) -> bool:
        bar = trainer.progress_bar_callback is not None and console_is_terminal()
        return trainer.is_global_zero and not bar

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._count = None, 0

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        value = trainer.callback_metrics.get(self.loss)
        if value is None:
            return
        value = value.detach().float()  # summed on the device: no synchronisation per step
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._shown(trainer):
            return
        log.info(self.line(trainer))

    def line(self, trainer: L.Trainer) -> str:
        """The progress line of the epoch that just ended (validation included: Lightning
        validates at the end of an epoch before ``on_train_epoch_end``)."""
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        steps = trainer.max_steps if trainer.max_steps not in (None, -1) else None
        parts = [
            f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else ""),
            f"step {trainer.global_step}" + (f"/{steps}" if steps else ""),
        ]
        if self._sum is not None and self._count:
            parts.append(f"{self.loss} {float(self._sum) / self._count:.4g}")
        monitor = self.monitor or getattr(trainer.checkpoint_callback, "monitor", None)
        monitor = monitor or "val/loss"
        value = trainer.callback_metrics.get(monitor)
        parts.append(f"{monitor} {float(value):.4g}" if value is not None else f"{monitor} -")
        parts.append(format_seconds(time.monotonic() - self._start))
        return "  ".join(parts)


def console_is_terminal() -> bool:
    """Whether stdout and stderr are both terminals (where a progress bar can be redrawn)."""
    return sys.stdout.isatty() and sys.stderr.isatty()
