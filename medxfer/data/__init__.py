"""Dataset machinery shared by every modality: validated tables, image decoding, patient-level
splits and the collate function of the batch contract (see DESIGN.md)."""

from __future__ import annotations

from .images import ImageDecodeError, read_grey_image, read_rgb_image
from .splits import patient_split
from .tables import Table, TableError, check_columns, read_table

__all__ = [
    "ImageDecodeError",
    "Table",
    "TableError",
    "check_columns",
    "patient_split",
    "read_grey_image",
    "read_rgb_image",
    "read_table",
]
