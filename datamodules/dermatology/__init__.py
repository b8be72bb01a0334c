"""Dermatology: case tables of 1-6 photographs (and the SCIN converter), soft differential
targets, the paper's augmentation, synthetic cases, and the case datamodule with skin-type
subgroups (Mustafa et al. 2021)."""

from __future__ import annotations

from .datamodule import DermatologyDataModule
from .synthetic import write_synthetic_derm
from .tables import (
    OTHER,
    build_label_space,
    convert_scin,
    parse_differential,
    read_derm_cases,
    soft_targets,
)
from .transforms import DERM_BLUR_SIGMAS, ColorImageTransform

__all__ = [
    "DERM_BLUR_SIGMAS",
    "OTHER",
    "ColorImageTransform",
    "DermatologyDataModule",
    "build_label_space",
    "convert_scin",
    "parse_differential",
    "read_derm_cases",
    "soft_targets",
    "write_synthetic_derm",
]
