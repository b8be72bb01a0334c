"""Chest X-ray: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG and PadChest tables, the paper's
augmentation, synthetic data in these layouts, and the multi-label datamodule with shifted
hospitals (Mustafa et al. 2021)."""

from __future__ import annotations

from .datamodule import ChestXrayDataModule, CXRTable
from .mimic import MIMIC_SPLITS, MIMIC_VIEWS, mimic_table, read_mimic_cxr
from .padchest import PADCHEST_MARKERS, PADCHEST_PROJECTIONS, PADCHEST_TERMS, read_padchest_csv
from .synthetic import (
    Shift,
    write_synthetic_chexpert,
    write_synthetic_mimic,
    write_synthetic_nih,
    write_synthetic_padchest,
)
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
    "MIMIC_SPLITS",
    "MIMIC_VIEWS",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "PADCHEST_MARKERS",
    "PADCHEST_PROJECTIONS",
    "PADCHEST_TERMS",
    "CXRTable",
    "ChestXrayDataModule",
    "GreyImageTransform",
    "Shift",
    "mimic_table",
    "read_chexpert_csv",
    "read_mimic_cxr",
    "read_nih_csv",
    "read_padchest_csv",
    "read_split_list",
    "write_synthetic_chexpert",
    "write_synthetic_mimic",
    "write_synthetic_nih",
    "write_synthetic_padchest",
]
