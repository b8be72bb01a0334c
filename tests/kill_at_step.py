"""A callback for the kill-and-resume tests (tests/test_resume.py): SIGKILLs its own process
(or sends it ``$MEDXFER_TEST_KILL_SIGNAL``, e.g. ``SIGTERM``) at the start of training step
``$MEDXFER_TEST_KILL_AT_STEP`` -- a deterministic point, not a timing race. Unset, it does
nothing, so a resumed run (same saved config) runs on."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["KILL_ENV", "SIGNAL_ENV", "KillAtStep", "SaveFinalWeights"]

#: The environment variable naming the global step to die at.
KILL_ENV = "MEDXFER_TEST_KILL_AT_STEP"
#: The environment variable naming the signal to send (default ``SIGKILL``).
SIGNAL_ENV = "MEDXFER_TEST_KILL_SIGNAL"


class KillAtStep(Callback):
    """``os.kill(getpid(), SIGKILL)`` (or ``$SIGNAL_ENV``) when ``trainer.global_step`` reaches
    ``$KILL_ENV``."""

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        at = os.environ.get(KILL_ENV)
        if at is not None and trainer.global_step == int(at):
            os.kill(os.getpid(), getattr(signal, os.environ.get(SIGNAL_ENV, "SIGKILL")))


class SaveFinalWeights(Callback):
    """Writes the model's final ``state_dict`` to ``<log_dir>/final_weights.pt`` when training
    ends, so a test compares the weights training ended with (not a checkpoint's)."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import torch

        torch.save(pl_module.state_dict(), f"{trainer.log_dir}/final_weights.pt")
