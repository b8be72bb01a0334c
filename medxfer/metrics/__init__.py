"""Metrics of medxfer: functional forms and torchmetrics ``Metric`` classes beside them.

* discrimination: :func:`masked_multilabel_auroc`, :class:`MultilabelAUROC`,
  :func:`label_mean`;
* calibration: :func:`expected_calibration_error`, :class:`CalibrationError`; temperature
  scaling: :func:`fit_temperature`, :class:`TemperatureFit`;
* fairness: :func:`subgroup_gaps`, :class:`SubgroupMetrics` (gaps, ECE and operating points per
  subgroup), :func:`tpr_at_specificity`, :func:`equalized_odds_gap`;
* uncertainty: :func:`bootstrap_ci` (percentile bootstrap over cases, vectorised),
  :func:`resampled_metrics` (every metric of a task on resamples shared by replicas);
* feature reuse: :func:`linear_cka`, :class:`MinibatchCKA`, :func:`weight_drift`;
* segmentation: :func:`dice_iou`, :class:`SegmentationMetrics` (Dice and IoU per class),
  :func:`case_dice` (per image, for subgroups), :func:`sample_pixels` (for pixel ECE).
"""

from __future__ import annotations

from .bootstrap import (
    BOOTSTRAP_TASKS,
    BootstrapCI,
    bootstrap_ci,
    case_order,
    cases_digest,
    replica_interval,
    resample_blocks,
    resampled_auroc,
    resampled_metrics,
)
from .calibration import (
    TEMPERATURE_BOUNDS,
    CalibrationError,
    TemperatureFit,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    reliability_bins,
    temperature_scaled,
)
from .cka import MinibatchCKA, gram, hsic_unbiased, linear_cka
from .classification import MultilabelAUROC, label_mean, masked_multilabel_auroc, metric_key
from .drift import stage_drift, weight_drift
from .segmentation import SegmentationMetrics, case_dice, dice_iou, sample_pixels
from .subgroups import (
    SubgroupMetrics,
    SubgroupReport,
    equalized_odds_gap,
    rates_at_threshold,
    subgroup_gaps,
    tpr_at_specificity,
)

__all__ = [
    "BOOTSTRAP_TASKS",
    "TEMPERATURE_BOUNDS",
    "BootstrapCI",
    "CalibrationError",
    "MinibatchCKA",
    "MultilabelAUROC",
    "SegmentationMetrics",
    "SubgroupMetrics",
    "SubgroupReport",
    "TemperatureFit",
    "bootstrap_ci",
    "case_dice",
    "case_order",
    "cases_digest",
    "dice_iou",
    "equalized_odds_gap",
    "expected_calibration_error",
    "fit_temperature",
    "gram",
    "hsic_unbiased",
    "label_mean",
    "linear_cka",
    "logits_from_probs",
    "masked_multilabel_auroc",
    "metric_key",
    "rates_at_threshold",
    "reliability_bins",
    "replica_interval",
    "resample_blocks",
    "resampled_auroc",
    "resampled_metrics",
    "sample_pixels",
    "stage_drift",
    "subgroup_gaps",
    "temperature_scaled",
    "tpr_at_specificity",
    "weight_drift",
]
