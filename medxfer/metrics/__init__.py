"""Metrics of medxfer: functional forms and torchmetrics ``Metric`` classes beside them.

* discrimination: :func:`masked_multilabel_auroc`, :class:`MultilabelAUROC`;
* calibration: :func:`expected_calibration_error`, :class:`CalibrationError`;
* fairness: :func:`subgroup_gaps`, :class:`SubgroupMetrics`;
* feature reuse: :func:`linear_cka`, :class:`MinibatchCKA`, :func:`weight_drift`.
"""

from __future__ import annotations

from .calibration import CalibrationError, expected_calibration_error, reliability_bins
from .cka import MinibatchCKA, gram, hsic_unbiased, linear_cka
from .classification import MultilabelAUROC, masked_multilabel_auroc, metric_key
from .drift import weight_drift
from .subgroups import SubgroupMetrics, SubgroupReport, subgroup_gaps

__all__ = [
    "CalibrationError",
    "MinibatchCKA",
    "MultilabelAUROC",
    "SubgroupMetrics",
    "SubgroupReport",
    "expected_calibration_error",
    "gram",
    "hsic_unbiased",
    "linear_cka",
    "masked_multilabel_auroc",
    "metric_key",
    "reliability_bins",
    "subgroup_gaps",
    "weight_drift",
]
