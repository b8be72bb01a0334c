"""Chest X-ray: CheXpert and NIH ChestX-ray14 tables, the paper's augmentation, synthetic data in
both layouts, and the multi-label datamodule with shifted hospitals (Mustafa et al. 2021)."""

from __future__ import annotations

from .datamodule import ChestXrayDataModule, CXRTable
from .synthetic import Shift, write_synthetic_chexpert, write_synthetic_nih
from .tables import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    NIH_FINDINGS,
    NIH_TO_CHEXPERT,
    read_chexpert_csv,
    read_nih_csv,
    read_split_list,
)
from .transforms import GreyImageTransform

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "CXRTable",
    "ChestXrayDataModule",
    "GreyImageTransform",
    "Shift",
    "read_chexpert_csv",
    "read_nih_csv",
    "read_split_list",
    "write_synthetic_chexpert",
    "write_synthetic_nih",
]
