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


# --- the VOI module as pydicom and PS3.3 C.11.2 define it, against hand computations ---------

FULL_RANGE = np.arange(4096, dtype=np.int64).reshape(64, 64)  # every 12-bit stored value once


def _dicom(path: Path, stored: np.ndarray = FULL_RANGE, **attrs: object) -> Path:
    """A 12-bit MONOCHROME2 file (:func:`write_dicom`) holding ``stored``, with ``attrs`` set."""
    import pydicom

    write_dicom(path, stored / 4095, "L", "CC", False, "p", "e")
    ds = pydicom.dcmread(path)
    assert np.array_equal(ds.pixel_array, stored)
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.save_as(path)
    return path


def _sigmoid(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1, output range [0, 1]."""
    return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))


def test_sigmoid_voi_function_after_the_rescale(tmp_path: Path) -> None:
    path = _dicom(
        tmp_path / "s.dcm",
        VOILUTFunction="SIGMOID",
        WindowCenter=3000,
        WindowWidth=900,
        RescaleSlope=2,
        RescaleIntercept=-100,
    )
    expected = _sigmoid(2.0 * FULL_RANGE - 100, 3000, 900)
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


@pytest.mark.parametrize(
    "width", [pytest.param(3.0, id="width-3"), pytest.param(0.5, id="width-below-1")]
)
def test_linear_exact_voi_function(tmp_path: Path, width: float) -> None:
    # PS3.3 C.11.2.1.3.2: x <= c - w/2 -> 0, x > c + w/2 -> 1, else (x - c) / w + 0.5
    path = _dicom(
        tmp_path / "e.dcm", VOILUTFunction="LINEAR_EXACT", WindowCenter=2000, WindowWidth=width
    )
    x = FULL_RANGE.astype(float)
    expected = np.where(
        x <= 2000 - width / 2, 0.0, np.where(x > 2000 + width / 2, 1.0, (x - 2000) / width + 0.5)
    )
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_width_1_with_half_integer_centre_is_a_threshold(tmp_path: Path) -> None:
    # LINEAR, c = 1000.5, w = 1 (PS3.3 C.11.2.1.2.1): x <= 1000 -> 0, x > 1000 -> 1; no 0/0
    x = read_dicom(_dicom(tmp_path / "t.dcm", WindowCenter=1000.5, WindowWidth=1))
    np.testing.assert_array_equal(x, (FULL_RANGE > 1000).astype(np.float32))


@pytest.mark.parametrize(
    ("function", "width", "message"),
    [
        pytest.param(None, 0, "Window Width must be greater than or equal to 1", id="linear-0"),
        pytest.param(None, 0.5, "greater than or equal to 1", id="linear-0.5"),
        pytest.param("LINEAR_EXACT", 0, "Window Width must be greater than 0", id="exact-0"),
        pytest.param("SIGMOID", -10, "Window Width must be greater than 0", id="sigmoid-neg"),
        pytest.param("GAMMA", 100, "Unsupported .* VOI LUT Function value 'GAMMA'", id="gamma"),
    ],
)
def test_window_the_standard_forbids_names_the_file(
    tmp_path: Path, function: str | None, width: float, message: str
) -> None:
    attrs: dict[str, object] = {"WindowCenter": 2000, "WindowWidth": width}
    if function is not None:
        attrs["VOILUTFunction"] = function
    path = _dicom(tmp_path / "bad_window.dcm", **attrs)
    with pytest.raises(ImageDecodeError, match=rf"bad_window\.dcm \(exam e1\): .*{message}"):
        read_dicom(path, context="exam e1")


@pytest.mark.parametrize(
    ("entries", "first"),
    [
        pytest.param(1024, 1000, id="8bit-1024-entries"),
        pytest.param(256, 0, id="8bit-inputs-beyond-256-entries"),
    ],
)
def test_8bit_voi_lut_does_not_wrap(tmp_path: Path, entries: int, first: int) -> None:
    from pydicom.dataset import Dataset

    lut = np.arange(entries) * 255 // (entries - 1)  # a ramp of 8-bit entries
    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first, 8])  # LUT Descriptor
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    # the window beside it is ignored: a VOI LUT comes first (pydicom's apply_voi_lut)
    path = _dicom(tmp_path / "lut.dcm", VOILUTSequence=[item])
    # PS3.3 C.11.2.1.1: inputs below the first mapped value take the first entry, above the
    # last the last
    expected = lut[np.clip(FULL_RANGE - first, 0, entries - 1)] / 255
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR_EXACT"])
def test_monochrome1_real_file_is_inverted_after_the_voi_function(
    tmp_path: Path, function: str
) -> None:
    """pydicom's CR test file (MONOCHROME1, rescale 0.684 / 200, window 1600 / 2800)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("6278"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    ds.VOILUTFunction = function
    ds.save_as(tmp_path / "cr.dcm")
    m = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    shown = _sigmoid(m, c, w) if function == "SIGMOID" else np.clip((m - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(read_dicom(tmp_path / "cr.dcm"), 1.0 - shown, atol=1e-6)


# --- compressed transfer syntaxes and their decoder plugins -----------------------------------


def _decodes(name: str) -> bool:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder

    tsyntax = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).file_meta
    return get_decoder(tsyntax.TransferSyntaxUID).is_available


def test_missing_decoder_plugin_names_file_syntax_and_extra() -> None:
    from pydicom.data import get_testdata_file

    if _decodes("MR_small_jpeg_ls_lossless.dcm"):
        pytest.skip("a JPEG-LS decoder plugin is installed")
    with pytest.raises(
        ImageDecodeError,
        match=r"MR_small_jpeg_ls_lossless\.dcm \(exam e1\): transfer syntax JPEG-LS Lossless"
        r" .*pip install 'medxfer\[dicom\]'",
    ):
        read_dicom(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), context="exam e1")


@pytest.mark.parametrize(
    "name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"]
)
def test_lossless_compressed_files_decode_like_the_uncompressed_one(name: str) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    if not _decodes(name):
        pytest.skip(f"no decoder plugin for {name}: pip install 'medxfer[dicom]'")
    stored = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(float)
    expected = np.clip((stored - (600 - 0.5)) / (1600 - 1) + 0.5, 0, 1)  # its window 600 / 1600
    np.testing.assert_allclose(read_dicom(get_testdata_file(name)), expected, atol=1e-6)


def test_dicom_extra_covers_every_compressed_syntax_pydicom_decodes() -> None:
    """For each compressed syntax, one of pydicom's plugins needs only packages that medxfer's
    dependencies or its ``dicom`` extra install (pydicom's own table of plugin requirements)."""
    import re

    tomllib = pytest.importorskip("tomllib")
    from pydicom import uid
    from pydicom.pixels.decoders import gdcm, pillow, pyjpegls, pylibjpeg, rle

    def names(requirements: list[str] | tuple[str, ...]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}

    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    installed = names(project["dependencies"]) | names(project["optional-dependencies"]["dicom"])
    installed |= {"numpy"}  # pydicom's own dependency
    plugins = [gdcm, pillow, pyjpegls, pylibjpeg, rle]
    syntaxes = {s for p in plugins for s in p.DECODER_DEPENDENCIES}
    assert uid.JPEGLSLossless in syntaxes and uid.RLELossless in syntaxes
    uncovered = [
        s.name
        for s in syntaxes
        if not any(
            s in p.DECODER_DEPENDENCIES and names(p.DECODER_DEPENDENCIES[s]) <= installed
            for p in plugins
        )
    ]
    assert not uncovered, f"no decoder installed by medxfer[dicom] for {uncovered}"
