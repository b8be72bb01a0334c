"""Mammography: 4-view exam lists (and VinDr / CBIS-DDSM converters), the DICOM reader it
registers as ``mammogram``, the paper's augmentation, synthetic DICOM exams, and the
multi-horizon datamodule (Mustafa et al. 2021)."""

from __future__ import annotations

from .datamodule import SWAP, MammographyDataModule, positive_weights, swap_laterality
from .dicom import orient_left, read_dicom, read_mammogram
from .synthetic import write_dicom, write_synthetic_mammo
from .tables import (
    DEFAULT_HORIZONS,
    EXAM_COLUMNS,
    VIEW_ORDER,
    convert_cbis_ddsm,
    convert_vindr,
    horizon_labels,
    horizon_names,
    read_exam_list,
)
from .transforms import MammogramTransform

__all__ = [
    "DEFAULT_HORIZONS",
    "EXAM_COLUMNS",
    "SWAP",
    "VIEW_ORDER",
    "MammogramTransform",
    "MammographyDataModule",
    "convert_cbis_ddsm",
    "convert_vindr",
    "horizon_labels",
    "horizon_names",
    "orient_left",
    "positive_weights",
    "read_dicom",
    "read_exam_list",
    "read_mammogram",
    "swap_laterality",
    "write_dicom",
    "write_synthetic_mammo",
]
