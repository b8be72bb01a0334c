"""The synthetic copies of the three segmentation layouts the tests in this folder read."""

from __future__ import annotations

from pathlib import Path

import pytest

from medxfer.datamodules.segmentation import (
    write_synthetic_drive,
    write_synthetic_montgomery,
    write_synthetic_siim,
)


@pytest.fixture(scope="session")
def seg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Montgomery (24 cases), DRIVE (10 training, 4 test) and SIIM-ACR (24 DICOMs + RLE CSV)
    folders at 48 px, written once; tests that change a file copy it first."""
    root = tmp_path_factory.mktemp("seg")
    return {
        "montgomery": write_synthetic_montgomery(root / "montgomery", 24, size=48, seed=0),
        "drive": write_synthetic_drive(root / "drive", 10, 4, size=48, seed=0),
        "siim": write_synthetic_siim(root / "siim", 24, size=48, seed=0),
    }
