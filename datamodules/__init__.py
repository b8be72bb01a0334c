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
from .synthetic import Shift, write_synthetic_chexpert, write_synthetic_nih

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "DATAMODULES",
    "NIH_FINDINGS",
    "NIH_TO_CHEXPERT",
    "CXRTable",
    "ChestXrayDataModule",
    "ImageTableDataset",
    "MedxferDataModule",
    "Shift",
    "age_group",
    "read_chexpert_csv",
    "read_nih_csv",
    "read_split_list",
    "write_synthetic_chexpert",
    "write_synthetic_nih",
]

DATAMODULES: Registry[type[MedxferDataModule]] = Registry("datamodule", group="medxfer.datamodules")
DATAMODULES.add("ChestXrayDataModule", ChestXrayDataModule)
