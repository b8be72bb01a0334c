"""Chest X-ray: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, PadChest, COVIDx and tuberculosis
readers, the paper's augmentation, synthetic data in these layouts, and the multi-label
datamodule with shifted hospitals (Mustafa et al. 2021)."""

from __future__ import annotations

from .covidx import COVIDX_CLASSES, read_covidx
from .datamodule import ChestXrayDataModule, CXRTable
from .mimic import MIMIC_SPLITS, MIMIC_VIEWS, mimic_table, read_mimic_cxr
from .padchest import PADCHEST_MARKERS, PADCHEST_PROJECTIONS, PADCHEST_TERMS, read_padchest_csv
from .synthetic import (
    Shift,
    write_synthetic_chexpert,
    write_synthetic_covidx,
    write_synthetic_mimic,
    write_synthetic_nih,
    write_synthetic_padchest,
    write_synthetic_tuberculosis,
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
from .tuberculosis import TB_LABEL, parse_reading, read_tuberculosis

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "COVIDX_CLASSES",
    "MIMIC_SPLITS",
    "MIMIC_VIEWS",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "PADCHEST_MARKERS",
    "PADCHEST_PROJECTIONS",
    "PADCHEST_TERMS",
    "TB_LABEL",
    "CXRTable",
    "ChestXrayDataModule",
    "GreyImageTransform",
    "Shift",
    "mimic_table",
    "parse_reading",
    "read_chexpert_csv",
    "read_covidx",
    "read_mimic_cxr",
    "read_nih_csv",
    "read_padchest_csv",
    "read_split_list",
    "read_tuberculosis",
    "write_synthetic_chexpert",
    "write_synthetic_covidx",
    "write_synthetic_mimic",
    "write_synthetic_nih",
    "write_synthetic_padchest",
    "write_synthetic_tuberculosis",
]
