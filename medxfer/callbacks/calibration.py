"""Calibration callback: ECE per evaluation set, logged, written as JSON and drawn as reliability
diagrams -- pooled and per label (Guo et al., ICML 2017; Mustafa et al., 2021) -- and the test
ECE before / after temperature scaling fitted on validation (Guo et al., section 4.2).
Segmentation is calibrated per pixel, on a fixed-size seeded subsample of each image's valid
pixels."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from typing_extensions import override

from medxfer import artifacts
from medxfer.metrics import (
    CalibrationError,
    TemperatureFit,
    logits_from_probs,
    metric_key,
    reliability_bins,
    sample_pixels,
    temperature_scaled,
)

from .base import EvalSetCallback, analysis_dir, write_json

__all__ = ["CalibrationCallback"]

#: The evaluation set the temperature is fitted on.
_FIT_SET = "val"


class CalibrationCallback(EvalSetCallback):
    """Log ``<prefix>/ece`` (and ``<prefix>/ece/<label>`` for multi-label tasks) for every
    evaluation set; write ``analysis/calibration_<set>.json``, a reliability diagram PNG and, for
    multi-label tasks, one diagram per label (``reliability_labels_<set>.png``; for test sets
    when tested; for validation once, at the end of fitting).

    The task's ``output_type`` picks the ECE flavour: multi-label probabilities against outcomes
    per label, or multi-class top-label confidence against correctness. Segmentation
    (``probs`` ``(B, K, H, W)``) scores pixels the same way -- per class for sigmoid masks,
    top-label for softmax ones (the task's ``pixel_task``) -- on ``pixels_per_image`` valid
    pixels of each image drawn with a generator seeded by ``pixel_seed`` and the case id
    (:func:`medxfer.metrics.sample_pixels`): the same pixels on any number of ranks.

    Temperature scaling (multi-label and multi-class tasks): at every validation (of fitting,
    or a standalone ``validate``), one temperature ``T`` is fitted on the whole ``val`` set (:class:`medxfer.metrics.
    TemperatureFit`: the logits recovered from the step's probabilities, gathered across ranks)
    and logged as ``val/temperature``. ``T`` is part of this callback's state, so a checkpoint
    carries the ``T`` of the validation it was saved after, and Lightning restores it with the
    checkpoint a test loads: the best checkpoint tested after ``medxfer fit`` is scaled by the
    ``T`` fitted on its own validation predictions, with no extra pass (``trainer.validate``
    then ``trainer.test`` of one model in one process scales by the ``T`` of that
    validation, unless the tested checkpoint brings its own). At test, each set's
    probabilities are rescaled by ``T`` and a second ECE accumulated (sum states, exact under
    DDP): ``<prefix>/temperature`` and ``<prefix>/ece_scaled`` are logged, and the JSON holds
    ``temperature``, ``temperature_epoch`` (the validation epoch it was fitted at),
    ``ece_scaled`` and ``bins_scaled``. A test of a checkpoint saved without this callback, or
    with no validation before it, has no ``T``: nothing is scaled (``temperature`` is null).

    Args:
        n_bins: equal-width bins.
        plot: write reliability diagrams.
        every_n_epochs: validation reporting period (the temperature is fitted at every
            validation regardless, so that any checkpoint carries its own).
        pixels_per_image: segmentation: valid pixels drawn per image (all when fewer).
        pixel_seed: segmentation: seed of the draws.
        temperature_scaling: fit ``T`` on validation and report the scaled test ECE.
    """

    def __init__(
        self,
        n_bins: int = 15,
        plot: bool = True,
        every_n_epochs: int = 1,
        pixels_per_image: int = 1000,
        pixel_seed: int = 0,
        temperature_scaling: bool = True,
    ) -> None:
        super().__init__(every_n_epochs)
        self.n_bins = n_bins
        self.plot = plot
        self.pixels_per_image = pixels_per_image
        self.pixel_seed = pixel_seed
        self.temperature_scaling = temperature_scaling
        self.temperature: float | None = None
        self.temperature_epoch: int | None = None
        self._last_val: dict[str, tuple[dict, dict, float]] = {}
        self._val_fit: TemperatureFit | None = None
        self._scaled: dict[str, CalibrationError] = {}

    def make_metric(self, pl_module: L.LightningModule) -> CalibrationError:
        task = getattr(pl_module, "output_type", "multilabel")
        if task == "segmentation":
            task = getattr(pl_module, "pixel_task", "multilabel")
        return CalibrationError(
            self.n_bins,
            task,
            getattr(pl_module, "label_names", None) if task == "multilabel" else None,
        )

    def update(self, metric: CalibrationError, outputs: dict[str, Any]) -> None:
        probs, target = outputs["probs"], outputs["target"]
        if probs.ndim == 4:  # segmentation: a seeded, fixed-size subsample of valid pixels
            probs, target = sample_pixels(
                probs,
                target,
                outputs.get("valid"),
                outputs["id"],
                self.pixels_per_image,
                self.pixel_seed,
                multiclass=metric.task == "multiclass",
            )
        metric.update(probs, target)

    # ------------------------------------------------------------------ temperature scaling
    @staticmethod
    def _scaling_task(pl_module: L.LightningModule) -> str | None:
        """``multilabel`` / ``multiclass`` for tasks whose probabilities can be rescaled."""
        task = getattr(pl_module, "output_type", "multilabel")
        return task if task in ("multilabel", "multiclass") else None

    def _on_batch_end(self, trainer, pl_module, outputs, stage, idx) -> None:
        super()._on_batch_end(trainer, pl_module, outputs, stage, idx)
        task = self._scaling_task(pl_module)
        if (
            not self.temperature_scaling
            or task is None
            or trainer.sanity_checking
            or not isinstance(outputs, dict)
            or "probs" not in outputs
        ):
            return
        prefix = self._prefix(outputs, stage, idx)
        probs, target = outputs["probs"].detach(), outputs["target"]
        if stage == "val" and prefix == _FIT_SET:
            if self._val_fit is None:
                self._val_fit = TemperatureFit(task).to(pl_module.device)
            self._val_fit.update(probs, target)
        elif stage == "test" and self.temperature is not None:
            if prefix not in self._scaled:
                self._scaled[prefix] = self.make_metric(pl_module).to(pl_module.device)
            scaled = temperature_scaled(logits_from_probs(probs, task), self.temperature, task)
            self._scaled[prefix].update(scaled.float(), target)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        if self._val_fit is None:
            return
        fit, self._val_fit = self._val_fit, None
        t = float(fit.compute())  # every rank: the logits are gathered
        if math.isfinite(t):
            self.temperature, self.temperature_epoch = t, trainer.current_epoch
            pl_module.log(f"{_FIT_SET}/{artifacts.TEMPERATURE}", t)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            artifacts.TEMPERATURE: self.temperature,
            artifacts.TEMPERATURE_EPOCH: self.temperature_epoch,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.temperature = state_dict.get(artifacts.TEMPERATURE)
        self.temperature_epoch = state_dict.get(artifacts.TEMPERATURE_EPOCH)

    # ------------------------------------------------------------------------------ output
    def report(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prefix: str,
        metric: CalibrationError,
    ) -> None:
        values = metric.compute()
        logged = dict(values)
        extra: dict[str, Any] = {}
        if metric.task == "multilabel" and metric.label_names:
            per_label = reliability_bins(metric.stats, per_label=True)
            extra[artifacts.BINS_PER_LABEL] = {  # keyed as ece/<label> is
                metric_key(name): {k: v[i] for k, v in per_label.items()}
                for i, name in enumerate(metric.label_names)
            }
        if prefix in self._scaled:
            scaled = self._scaled.pop(prefix)
            ece_scaled = scaled.compute()[artifacts.ECE]
            logged[artifacts.TEMPERATURE] = self.temperature
            logged[artifacts.ECE_SCALED] = ece_scaled
            extra[artifacts.ECE_SCALED] = ece_scaled
            extra[artifacts.BINS_SCALED] = reliability_bins(scaled.stats)
        if prefix.startswith("test"):
            extra[artifacts.TEMPERATURE] = self.temperature
            extra[artifacts.TEMPERATURE_EPOCH] = self.temperature_epoch
        pl_module.log_dict(
            {f"{prefix}/{k}": float(v) for k, v in logged.items()}, add_dataloader_idx=False
        )
        bins = reliability_bins(metric.stats)
        write_json(
            trainer,
            artifacts.calibration_json(prefix),
            {artifacts.EPOCH: trainer.current_epoch, **values, artifacts.BINS: bins, **extra},
        )
        label_ece = {
            k.removeprefix(f"{artifacts.ECE}/"): float(v)
            for k, v in values.items()
            if k.startswith(f"{artifacts.ECE}/")
        }
        drawing = (bins, extra.get(artifacts.BINS_PER_LABEL, {}), label_ece)
        if prefix.startswith("val"):  # drawn once, at the end of fitting
            self._last_val[prefix] = (*drawing, float(values[artifacts.ECE]))
        else:
            self._draw(trainer, prefix, *drawing, float(values[artifacts.ECE]))

    def _draw(
        self,
        trainer: L.Trainer,
        prefix: str,
        bins: dict,
        label_bins: dict,
        label_ece: dict,
        ece: float,
    ) -> None:
        if self.plot and trainer.is_global_zero:
            # matplotlib: imported when drawing
            from medxfer.plots import plot_reliability, plot_reliability_per_label

            folder = analysis_dir(trainer)
            plot_reliability(bins, ece, prefix, folder / artifacts.reliability_plot(prefix))
            if label_bins:
                plot_reliability_per_label(
                    {prefix: label_bins},
                    {prefix: label_ece},
                    f"{prefix}: reliability per label",
                    folder / artifacts.reliability_labels_plot(prefix),
                )

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for prefix, drawing in self._last_val.items():
            self._draw(trainer, prefix, *drawing)
        self._last_val = {}
