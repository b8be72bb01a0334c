"""Task LightningModules of medxfer, registered by name for ``medxfer list tasks``.

Subclass :class:`TransferTask` for a new modality (see docs/getting-started.md)."""

from __future__ import annotations

from medxfer.registry import Registry

from .base import TransferTask
from .multilabel import MultiLabelClassifier, masked_bce_with_logits

__all__ = ["TASKS", "MultiLabelClassifier", "TransferTask", "masked_bce_with_logits"]

TASKS: Registry[type[TransferTask]] = Registry("task", group="medxfer.tasks")
TASKS.add("TransferTask", TransferTask)
TASKS.add("MultiLabelClassifier", MultiLabelClassifier)
