"""Segmentation: readers of the benchmark layouts (DRIVE, Montgomery, SIIM-ACR) and of a generic
image + mask table, the joint image / mask augmentation, synthetic data in the three layouts,
and the datamodule on the template."""

from __future__ import annotations

from .datamodule import MaskDataset, SegmentationDataModule, load_masks, read_mask
from .readers import read_drive, read_mask_table, read_montgomery, read_siim
from .synthetic import write_synthetic_drive, write_synthetic_montgomery, write_synthetic_siim
from .transforms import SegmentationTransform

__all__ = [
    "MaskDataset",
    "SegmentationDataModule",
    "SegmentationTransform",
    "load_masks",
    "read_drive",
    "read_mask",
    "read_mask_table",
    "read_montgomery",
    "read_siim",
    "write_synthetic_drive",
    "write_synthetic_montgomery",
    "write_synthetic_siim",
]
