"""LightningDataModules of medxfer, registered by name for ``medxfer list datamodules``.

Every datamodule derives from :class:`MedxferDataModule` and yields batches of the contract in
DESIGN.md (``image``, ``target``, ``groups``, ``id``; ``mask`` for multi-image cases).
"""

from __future__ import annotations

from medxfer.registry import Registry

from .base import ImageTableDataset, MedxferDataModule, age_group
from .cxr import ChestXrayDataModule, CXRTable
from .cxr_tables import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    NIH_FINDINGS,
    NIH_TO_CHEXPERT,
    read_chexpert_csv,
    read_nih_csv,
    read_split_list,
)
from .derm import CaseDataset, DermatologyDataModule
from .derm_tables import (
    OTHER,
    build_label_space,
    convert_scin,
    parse_differential,
    read_derm_cases,
    soft_targets,
)
from .mammo import ExamDataset, MammographyDataModule, read_mammogram, swap_laterality
from .mammo_tables import (
    DEFAULT_HORIZONS,
    VIEW_ORDER,
    convert_cbis_ddsm,
    convert_vindr,
    horizon_labels,
    horizon_names,
    read_exam_list,
)
from .synthetic import Shift, write_synthetic_chexpert, write_synthetic_nih
from .synthetic_derm import write_synthetic_derm
from .synthetic_mammo import write_synthetic_mammo

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "DATAMODULES",
    "DEFAULT_HORIZONS",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "OTHER",
    "VIEW_ORDER",
    "CXRTable",
    "CaseDataset",
    "ChestXrayDataModule",
    "DermatologyDataModule",
    "ExamDataset",
    "ImageTableDataset",
    "MammographyDataModule",
    "MedxferDataModule",
    "Shift",
    "age_group",
    "build_label_space",
    "convert_cbis_ddsm",
    "convert_scin",
    "convert_vindr",
    "horizon_labels",
    "horizon_names",
    "parse_differential",
    "read_chexpert_csv",
    "read_derm_cases",
    "read_exam_list",
    "read_mammogram",
    "read_nih_csv",
    "read_split_list",
    "soft_targets",
    "swap_laterality",
    "write_synthetic_chexpert",
    "write_synthetic_derm",
    "write_synthetic_mammo",
    "write_synthetic_nih",
]

DATAMODULES: Registry[type[MedxferDataModule]] = Registry("datamodule", group="medxfer.datamodules")
DATAMODULES.add("ChestXrayDataModule", ChestXrayDataModule)
DATAMODULES.add("DermatologyDataModule", DermatologyDataModule)
DATAMODULES.add("MammographyDataModule", MammographyDataModule)
