"""The generic table datamodule: any dataset a user brings as a table (CSV / Parquet) or an image
folder, configured in YAML -- its readers, the datamodule and synthetic data in both layouts."""

from __future__ import annotations

from .datamodule import ImageTable
from .readers import IMAGE_SUFFIXES, SPLIT_NAMES, read_image_folder, read_image_table
from .synthetic import TABLE_CLASSES, write_synthetic_table

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLIT_NAMES",
    "TABLE_CLASSES",
    "ImageTable",
    "read_image_folder",
    "read_image_table",
    "write_synthetic_table",
]
