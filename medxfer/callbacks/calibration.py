"""Calibration callback: ECE per evaluation set, logged, written as JSON and drawn as a
reliability diagram (Guo et al., ICML 2017; Mustafa et al., 2021). Segmentation is calibrated
per pixel, on a fixed-size seeded subsample of each image's valid pixels."""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

from medxfer import artifacts
from medxfer.metrics import CalibrationError, reliability_bins, sample_pixels

from .base import EvalSetCallback, analysis_dir, write_json

__all__ = ["CalibrationCallback"]


class CalibrationCallback(EvalSetCallback):
    """Log ``<prefix>/ece`` (and ``<prefix>/ece/<label>`` for multi-label tasks) for every
    evaluation set; write ``analysis/calibration_<set>.json`` and a reliability diagram PNG
    (for test sets when tested; for validation once, at the end of fitting).

    The task's ``output_type`` picks the ECE flavour: multi-label probabilities against outcomes
    per label, or multi-class top-label confidence against correctness. Segmentation
    (``probs`` ``(B, K, H, W)``) scores pixels the same way -- per class for sigmoid masks,
    top-label for softmax ones (the task's ``pixel_task``) -- on ``pixels_per_image`` valid
    pixels of each image drawn with a generator seeded by ``pixel_seed`` and the case id
    (:func:`medxfer.metrics.sample_pixels`): the same pixels on any number of ranks.

    Args:
        n_bins: equal-width bins.
        plot: write reliability diagrams.
        every_n_epochs: validation reporting period.
        pixels_per_image: segmentation: valid pixels drawn per image (all when fewer).
        pixel_seed: segmentation: seed of the draws.
    """

    def __init__(
        self,
        n_bins: int = 15,
        plot: bool = True,
        every_n_epochs: int = 1,
        pixels_per_image: int = 1000,
        pixel_seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs)
        self.n_bins = n_bins
        self.plot = plot
        self.pixels_per_image = pixels_per_image
        self.pixel_seed = pixel_seed
        self._last_val: dict[str, tuple[dict, float]] = {}

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

    def report(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prefix: str,
        metric: CalibrationError,
    ) -> None:
        values = metric.compute()
        pl_module.log_dict(
            {f"{prefix}/{k}": v for k, v in values.items()}, add_dataloader_idx=False
        )
        bins = reliability_bins(metric.stats)
        write_json(
            trainer,
            artifacts.calibration_json(prefix),
            {artifacts.EPOCH: trainer.current_epoch, **values, artifacts.BINS: bins},
        )
        if prefix.startswith("val"):  # drawn once, at the end of fitting
            self._last_val[prefix] = (bins, float(values[artifacts.ECE]))
        else:
            self._draw(trainer, prefix, bins, float(values[artifacts.ECE]))

    def _draw(self, trainer: L.Trainer, prefix: str, bins: dict, ece: float) -> None:
        if self.plot and trainer.is_global_zero:
            from medxfer.plots import plot_reliability  # matplotlib: imported when drawing

            plot_reliability(
                bins,
                ece,
                prefix,
                analysis_dir(trainer) / artifacts.reliability_plot(prefix),
            )

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for prefix, (bins, ece) in self._last_val.items():
            self._draw(trainer, prefix, bins, ece)
        self._last_val = {}
