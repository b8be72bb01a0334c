"""PadChest: the reader on a synthetic copy of the real table (36 columns, an unnamed index,
cells wrapped across lines, list-literal labels), against an independent parse with the csv
module; terms match exactly, unmapped ones are listed, errors name the physical line."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from medxfer.data.tables import TableError
from medxfer.datamodules.chest_xray import (
    PADCHEST_TERMS,
    read_padchest_csv,
    write_synthetic_padchest,
)

LABELS = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "No Finding", "Support Devices"]


@pytest.fixture(scope="module")
def padchest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_padchest(tmp_path_factory.mktemp("padchest"), 40, size=24, seed=5)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def items(cell: str) -> set[str]:
    """The terms of a Labels cell by a regex over its quoted items: independent of the
    reader's literal_eval."""
    return {t.strip() for t in re.findall(r"'([^']*)'", cell) if t.strip()}


def physical_line(path: Path, image: str) -> int:
    """The physical line of the row holding ``image``: where its ImageID first appears."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if image in line:
            return n
    raise AssertionError(image)


def test_label_counts_equal_an_independent_parse(padchest: Path) -> None:
    rows = [r for r in rows_of(padchest) if r["Labels"] != "nan" and items(r["Labels"])]
    df = read_padchest_csv(padchest, labels=LABELS)
    assert sorted(df["id"]) == sorted(r["ImageID"] for r in rows)
    for lab in LABELS:
        want = sum(bool(items(r["Labels"]) & set(PADCHEST_TERMS[lab])) for r in rows)
        assert int(df[lab].sum()) == want, lab
    for r in rows[:10]:
        got = df.set_index("id").loc[r["ImageID"]]
        assert got["age"] == 2014 - float(r["PatientBirth"])
        assert got["line"] == physical_line(padchest, r["ImageID"])
        image = padchest.parent / r["ImageDir"] / r["ImageID"]
        assert got["path"] == f"{image}#{r['BitsStored_DICOM']}"  # the bits the decoder scales by
        assert image.is_file()
        assert got["sex"] == {"M": "Male", "F": "Female", "O": "Unknown"}[r["PatientSex_DICOM"]]


def test_the_table_has_wrapped_cells_and_lines_stay_exact(padchest: Path) -> None:
    text = padchest.read_text()
    rows = rows_of(padchest)
    assert text.count("\n") > len(rows) + 1, "the synthetic table wraps cells across lines"
    df = read_padchest_csv(padchest, labels=LABELS)
    lines = df.set_index("id")["line"]
    for r in rows[-5:]:
        if r["ImageID"] in lines.index:
            assert lines[r["ImageID"]] == physical_line(padchest, r["ImageID"])


def test_a_bad_labels_cell_after_wrapped_rows_names_its_physical_line(
    padchest: Path, tmp_path: Path
) -> None:
    rows = rows_of(padchest)
    bad = len(rows) - 3
    rows[bad]["Labels"] = "__import__('os').system('touch pwned')"
    path = write_rows(tmp_path / padchest.name, rows)
    line = physical_line(path, rows[bad]["ImageID"])
    with pytest.raises(TableError, match=rf"line {line}, column 'Labels': .* is not a list"):
        read_padchest_csv(path, labels=LABELS)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_terms_match_exactly_not_by_substring(padchest: Path, tmp_path: Path) -> None:
    rows = rows_of(padchest)[:3]
    rows[0]["Labels"] = "['loculated pleural effusion']"
    rows[1]["Labels"] = "['pleural effusion', ' cardiomegaly', '']"
    rows[2]["Labels"] = "['normal']"
    path = write_rows(tmp_path / "t.csv", rows)
    default = read_padchest_csv(path, labels=["Pleural Effusion", "Cardiomegaly", "No Finding"])
    assert default["Pleural Effusion"].tolist() == [1.0, 1.0, 0.0]
    assert default["Cardiomegaly"].tolist() == [0.0, 1.0, 0.0]
    assert default["No Finding"].tolist() == [0.0, 0.0, 1.0]
    narrow = read_padchest_csv(
        path, labels=["Pleural Effusion"], terms={"Pleural Effusion": ["pleural effusion"]}
    )
    assert narrow["Pleural Effusion"].tolist() == [0.0, 1.0, 0.0]
    unknown = read_padchest_csv(
        path, labels=["Cardiomegaly", "Lung Opacity"], terms={"Lung Opacity": []}
    )
    assert np.isnan(unknown["Lung Opacity"]).all()


def test_unmapped_terms_are_listed_and_markers_dropped_only_when_asked(
    padchest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = rows_of(padchest)[:4]
    rows[0]["Labels"] = "['scoliosis', ' cardiomegaly']"
    rows[1]["Labels"] = "['exclude']"
    rows[2]["Labels"] = "['suboptimal study', ' pleural effusion']"
    rows[3]["Labels"] = "nan"
    path = write_rows(tmp_path / "t.csv", rows)
    caplog.set_level("INFO")
    kept = read_padchest_csv(path, labels=["Cardiomegaly"])
    assert kept["id"].tolist() == [r["ImageID"] for r in rows[:3]]
    assert "'scoliosis': 1" in caplog.text and "'pleural effusion': 1" in caplog.text
    assert "1 image(s): no labels" in caplog.text
    caplog.clear()
    dropped = read_padchest_csv(
        path, labels=["Cardiomegaly"], drop_excluded=True, drop_suboptimal=True
    )
    assert dropped["id"].tolist() == [rows[0]["ImageID"]]
    assert "1 image(s): 'exclude' (dropped as asked)" in caplog.text
    assert "1 image(s): 'suboptimal study' (dropped as asked)" in caplog.text


def test_filters_by_method_and_projection(padchest: Path) -> None:
    rows = [r for r in rows_of(padchest) if r["Labels"] != "nan" and items(r["Labels"])]
    physician = read_padchest_csv(padchest, labels=LABELS, method="Physician")
    assert sorted(physician["id"]) == sorted(
        r["ImageID"] for r in rows if r["MethodLabel"] == "Physician"
    )
    chosen = read_padchest_csv(padchest, labels=LABELS, projections=["PA", "AP_horizontal"])
    assert set(chosen["view"]) <= {"PA", "AP Supine"}
    assert len(chosen) == sum(r["Projection"] in ("PA", "AP_horizontal") for r in rows)
    frontal = read_padchest_csv(padchest, labels=LABELS, frontal_only=True)
    assert len(frontal) == sum(r["Projection"] != "L" for r in rows)


def test_bad_projection_and_flat_layout(padchest: Path, tmp_path: Path) -> None:
    rows = rows_of(padchest)[:3]
    rows[1]["Projection"] = "OBLIQUE"
    path = write_rows(tmp_path / "t.csv", rows)
    with pytest.raises(TableError, match=r"line 3, column 'Projection': value 'OBLIQUE'"):
        read_padchest_csv(path, labels=LABELS)
    rows[1]["Projection"] = "PA"
    path = write_rows(tmp_path / "t.csv", rows)
    flat = read_padchest_csv(path, labels=LABELS, layout="flat", image_dir=tmp_path / "img")
    assert flat["path"].tolist()[0] == f"{tmp_path / 'img' / rows[0]['ImageID']}#16"


@pytest.mark.parametrize(
    ("stored", "top", "bits", "scale"),
    [
        pytest.param(4095, 4095, 12, 4095, id="12-bit-as-stored"),
        pytest.param(3000, 3000, 12, 4095, id="12-bit-dark"),
        pytest.param(60000, 60000, 12, 65535, id="rescaled-to-16-bit"),
        pytest.param(1000, 1000, 16, 65535, id="16-bit-acquisition"),
    ],
)
def test_16_bit_pngs_are_scaled_by_their_real_bit_depth(
    tmp_path: Path, stored: int, top: int, bits: int, scale: int
) -> None:
    from PIL import Image

    from medxfer.data.images import read_grey_image

    pixels = np.linspace(0, top, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    got = read_grey_image(f"{tmp_path / 'x.png'}#{bits}")
    np.testing.assert_allclose(got, pixels / scale, rtol=1e-6)
    plain = read_grey_image(tmp_path / "x.png")  # without the bits: the container's 16 bits
    np.testing.assert_allclose(plain, pixels / 65535, rtol=1e-6)


def test_padchest_through_the_datamodule(padchest: Path) -> None:
    from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable

    dm = ChestXrayDataModule(
        CXRTable(csv=str(padchest), format="padchest", options={"method": "RNN_model"}),
        labels=LABELS,
        image_size=24,
        batch_size=4,
        num_workers=0,
        verify_images=True,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["image"].float().mean() > 10
