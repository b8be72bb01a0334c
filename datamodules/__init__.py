"""LightningDataModules of medxfer: the data template (and, re-exported from
:mod:`medxfer.data.dataset`, the one dataset every datamodule shares), and one sub-package per
modality or dataset family.

Every datamodule follows the template of :class:`MedxferDataModule` and yields batches of the
contract in DESIGN.md (``image``, ``target``, ``groups``, ``id``; ``mask`` for multi-image
cases). The modality packages are imported where they are used, never here, so the core and a
command that needs one modality import that one only:

* :mod:`medxfer.datamodules.chest_xray` -- CheXpert, NIH ChestX-ray14 (multi-label, shifted sets);
* :mod:`medxfer.datamodules.mammography` -- 4-view DICOM exams with horizon labels;
* :mod:`medxfer.datamodules.dermatology` -- cases of 1-6 photos with soft differentials;
* :mod:`medxfer.datamodules.segmentation` -- Montgomery, DRIVE, SIIM masks;
* :mod:`medxfer.datamodules.image_table` -- any dataset as a table or image folder, by YAML.

Each is declared as an entry point (``medxfer list datamodules``), so configs name them by class
name (``class_path: ChestXrayDataModule``).
"""

from __future__ import annotations

from medxfer.data.dataset import ImageTableDataset, age_group

from .base import MedxferDataModule

__all__ = ["ImageTableDataset", "MedxferDataModule", "age_group"]
