"""Task LightningModules of medxfer, named by the shape of what they classify and declared as
entry points (``medxfer list tasks``; short class names in configs):

* :class:`MultiLabelClassifier` -- one image, independent labels (sigmoid);
* :class:`CaseClassifier` -- one image or a case of several (masked mean), one distribution
  over classes (softmax, hard or soft targets);
* :class:`MultiViewClassifier` -- a fixed set of views (4-view exams), concatenated features,
  one head per output;
* :class:`Segmenter` -- per-pixel masks, a U-Net decoder over the backbone's stages.

Subclass :class:`TransferTask` for a new shape (see docs/getting-started.md)."""

from __future__ import annotations

from .base import TransferTask, mixup_batch, resolve_input_norm
from .multi_image import CaseClassifier, CaseMetrics, masked_mean
from .multi_view import MultiViewClassifier, masked_focal_loss
from .segmentation import Segmenter, unet_stages
from .single_image import MultiLabelClassifier, masked_bce_with_logits

__all__ = [
    "CaseClassifier",
    "CaseMetrics",
    "MultiLabelClassifier",
    "MultiViewClassifier",
    "Segmenter",
    "TransferTask",
    "masked_bce_with_logits",
    "masked_focal_loss",
    "masked_mean",
    "mixup_batch",
    "resolve_input_norm",
    "unet_stages",
]
