"""The mammography DICOM reader: MONOCHROME1, windowing, broken files, orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medxfer.data import ImageDecodeError
from medxfer.datamodules.mammography import orient_left, read_dicom, write_dicom

NAN = float("nan")


def test_monochrome1_is_inverted_on_pixel_values(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 1, 16), (8, 1))
    write_dicom(tmp_path / "m2.dcm", ramp, "L", "CC", monochrome1=False, patient="p", exam="e")
    write_dicom(tmp_path / "m1.dcm", ramp, "L", "CC", monochrome1=True, patient="p", exam="e")
    m2, m1 = read_dicom(tmp_path / "m2.dcm"), read_dicom(tmp_path / "m1.dcm")
    # stored values: round(ramp * 4095), inverted for MONOCHROME1; window 2048/4096 maps 0..4095 onto ~0..1
    stored = np.round(ramp * 4095)
    expected = np.clip((stored - (2048 - 0.5)) / (4096 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(m2, expected, atol=1e-6)
    np.testing.assert_allclose(m1, expected, atol=1e-6)  # inverted twice: displays like MONOCHROME2
    assert m2.dtype == np.float32 and len(np.unique(m2)) == len(
        np.unique(stored)
    )  # 12-bit kept, not 8


def test_window_is_applied(tmp_path: Path) -> None:
    import pydicom

    write_dicom(
        tmp_path / "w.dcm", np.tile(np.linspace(0, 1, 32), (4, 1)), "R", "MLO", False, "p", "e"
    )
    ds = pydicom.dcmread(tmp_path / "w.dcm")
    ds.WindowCenter, ds.WindowWidth = 1000, 501
    ds.save_as(tmp_path / "w.dcm")
    x = read_dicom(tmp_path / "w.dcm")
    stored = ds.pixel_array.astype(float)
    np.testing.assert_allclose(x, np.clip((stored - 999.5) / 500 + 0.5, 0, 1), atol=1e-6)


def test_broken_dicom_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.dcm").write_bytes(b"DICM" + b"\x00" * 20)
    with pytest.raises(ImageDecodeError, match=r"could not decode DICOM .*bad\.dcm \(exam e1\)"):
        read_dicom(tmp_path / "bad.dcm", context="exam e1")


def test_orientation_puts_every_breast_on_the_left() -> None:
    img = np.zeros((4, 6), np.float32)
    img[:, 4:] = 1
    assert orient_left(img)[:, :2].sum() == 8 and orient_left(orient_left(img)).sum() == img.sum()
