"""Metrics of medxfer: functional forms and torchmetrics ``Metric`` classes beside them."""

from __future__ import annotations

from .classification import MultilabelAUROC, masked_multilabel_auroc, metric_key

__all__ = ["MultilabelAUROC", "masked_multilabel_auroc", "metric_key"]
