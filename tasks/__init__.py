"""Task LightningModules of medxfer, registered by name for ``medxfer list tasks``.

Subclass :class:`TransferTask` for a new modality (see docs/getting-started.md)."""

from __future__ import annotations

from medxfer.registry import Registry

from .base import TransferTask, mixup_batch
from .case import CaseClassifier, CaseMetrics, masked_mean
from .mammo import MammographyClassifier, masked_focal_loss
from .multilabel import MultiLabelClassifier, masked_bce_with_logits

__all__ = [
    "TASKS",
    "CaseClassifier",
    "CaseMetrics",
    "MammographyClassifier",
    "MultiLabelClassifier",
    "TransferTask",
    "masked_bce_with_logits",
    "masked_focal_loss",
    "masked_mean",
    "mixup_batch",
]

TASKS: Registry[type[TransferTask]] = Registry("task", group="medxfer.tasks")
TASKS.add("TransferTask", TransferTask)
TASKS.add("MultiLabelClassifier", MultiLabelClassifier)
TASKS.add("CaseClassifier", CaseClassifier)
TASKS.add("MammographyClassifier", MammographyClassifier)
