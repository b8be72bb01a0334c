"""LightningDataModules of medxfer, registered by name for ``medxfer list datamodules`` and for
short class names in configs.

Every datamodule follows the template of :class:`MedxferDataModule` and yields batches of the
contract in DESIGN.md (``image``, ``target``, ``groups``, ``id``; ``mask`` for multi-image
cases). :class:`ImageTable` takes any dataset a user brings as a table (or an image folder) by
YAML alone; one sub-package per modality holds its readers, transforms, image reader, synthetic
data and datamodule.
"""

from __future__ import annotations

from .base import DATAMODULES, ImageTableDataset, MedxferDataModule, age_group
from .chest_xray import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    NIH_FINDINGS,
    NIH_TO_CHEXPERT,
    ChestXrayDataModule,
    CXRTable,
    Shift,
    read_chexpert_csv,
    read_nih_csv,
    read_split_list,
    write_synthetic_chexpert,
    write_synthetic_nih,
)
from .dermatology import (
    OTHER,
    DermatologyDataModule,
    build_label_space,
    convert_scin,
    parse_differential,
    read_derm_cases,
    soft_targets,
    write_synthetic_derm,
)
from .image_table import ImageTable, read_image_folder, read_image_table, write_synthetic_table
from .mammography import (
    DEFAULT_HORIZONS,
    VIEW_ORDER,
    MammographyDataModule,
    convert_cbis_ddsm,
    convert_vindr,
    horizon_labels,
    horizon_names,
    read_exam_list,
    read_mammogram,
    swap_laterality,
    write_synthetic_mammo,
)
from .segmentation import (
    SegmentationDataModule,
    write_synthetic_drive,
    write_synthetic_montgomery,
    write_synthetic_siim,
)

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
    "ChestXrayDataModule",
    "DermatologyDataModule",
    "ImageTable",
    "ImageTableDataset",
    "MammographyDataModule",
    "MedxferDataModule",
    "SegmentationDataModule",
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
    "read_image_folder",
    "read_image_table",
    "read_mammogram",
    "read_nih_csv",
    "read_split_list",
    "soft_targets",
    "swap_laterality",
    "write_synthetic_chexpert",
    "write_synthetic_derm",
    "write_synthetic_drive",
    "write_synthetic_mammo",
    "write_synthetic_montgomery",
    "write_synthetic_nih",
    "write_synthetic_siim",
    "write_synthetic_table",
]
