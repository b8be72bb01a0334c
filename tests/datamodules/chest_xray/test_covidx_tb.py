"""COVIDx label files (3, 4 and mixed fields) and the Montgomery / Shenzhen tuberculosis sets:
counts against an independent parse of the files, the clinical readings' sex and age against
hand-read values, errors naming the file and line, and both through the chest X-ray datamodule."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medxfer.data.tables import TableError
from medxfer.datamodules.chest_xray import (
    ChestXrayDataModule,
    CXRTable,
    parse_reading,
    read_covidx,
    read_tuberculosis,
    write_synthetic_covidx,
    write_synthetic_tuberculosis,
)

CLASSES = ["normal", "pneumonia", "COVID-19"]


def independent_classes(path: Path) -> Counter[str]:
    """Class per line by a regex: the class is the word before an optional source word."""
    found: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        m = re.search(r" (normal|pneumonia|COVID-19)(?: [a-z0-9]+)?$", line)
        assert m, line
        found[m.group(1)] += 1
    return found


@pytest.mark.parametrize("fields", ["3", "4", "mixed"])
def test_covidx_shapes_count_like_an_independent_parse(fields: str, tmp_path: Path) -> None:
    train = write_synthetic_covidx(tmp_path, 40, size=16, fields=fields)
    declared = "mixed" if fields == "mixed" else fields
    df = read_covidx(train, CLASSES, fields=declared)  # type: ignore[arg-type]
    assert Counter(df["class"]) == independent_classes(train)
    for c in CLASSES:
        assert int(df[c].sum()) == independent_classes(train)[c]
    assert all(Path(p).is_file() for p in df["path"]), "names with spaces stay whole"
    assert (df["data_source"] != "").any() == (fields != "3")
    assert df["line"].tolist() == list(range(1, len(df) + 1))
    assert read_covidx(train, CLASSES)["id"].tolist() == df["id"].tolist()  # auto agrees


def test_covidx_errors_name_the_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "train.txt"
    path.write_text("p1 a.png normal\np2 b.png pneumonia rsna\n\np3 c d.png COVID-19\n")
    with pytest.raises(TableError, match=r"train.txt: line 2 is a 4-field line .* fields: 3"):
        read_covidx(path, CLASSES, fields="3")
    with pytest.raises(TableError, match=r"line 1 is a 3-field line"):
        read_covidx(path, CLASSES, fields="4")
    df = read_covidx(path, CLASSES)
    assert df["id"].tolist() == ["a.png", "b.png", "c d.png"] and df["line"].tolist() == [1, 2, 4]
    assert "declare fields: mixed" in caplog.text
    path.write_text("p1 a.png normal\np2 b.png positive\n")
    with pytest.raises(TableError, match=r"line 2, field class: 'positive' is not one of"):
        read_covidx(path, CLASSES)
    path.write_text("p1 a.png viral\n")
    with pytest.raises(TableError, match=r"line 1: no class name"):
        read_covidx(path, CLASSES)


@pytest.mark.parametrize(
    ("text", "sex", "age"),
    [
        pytest.param("Patient's Sex: F\nPatient's Age: 040Y\nnormal", "Female", 40.0, id="mcu"),
        pytest.param("Patient's Sex: M\nPatient's Age: 069Y\nPTB", "Male", 69.0, id="mcu-male"),
        pytest.param("male 35yrs\nnormal", "Male", 35.0, id="chn-yrs"),
        pytest.param("Female, 23\nPTB", "Female", 23.0, id="chn-bare"),
        pytest.param("11 months male\nnormal", "Male", 11 / 12, id="chn-months"),
        pytest.param("\n\nnormal", "Unknown", np.nan, id="chn-nothing"),
        pytest.param("female 300yrs\nnormal", "Female", np.nan, id="implausible-age"),
    ],
)
def test_clinical_readings(text: str, sex: str, age: float) -> None:
    got_sex, got_age = parse_reading(text)
    assert got_sex == sex
    assert got_age == pytest.approx(age, nan_ok=True)


@pytest.mark.parametrize("collection", ["MCUCXR", "CHNCXR"])
def test_tuberculosis_labels_from_names(collection: str, tmp_path: Path) -> None:
    root = write_synthetic_tuberculosis(tmp_path, 30, size=16, collection=collection)
    df = read_tuberculosis(root)
    names = sorted(p.stem for p in (root / "CXR_png").glob("*.png"))
    assert df["id"].tolist() == names
    assert df["Tuberculosis"].tolist() == [float(n[-1]) for n in names]
    for _, r in df.iterrows():
        reading = root / "ClinicalReadings" / f"{r['id']}.txt"
        want = parse_reading(reading.read_text()) if reading.is_file() else ("Unknown", np.nan)
        assert r["sex"] == want[0]
        assert r["age"] == pytest.approx(want[1], nan_ok=True)


def test_tuberculosis_refuses_an_unlabelled_name(tmp_path: Path) -> None:
    root = write_synthetic_tuberculosis(tmp_path, 3, size=16)
    (root / "CXR_png" / "scan.png").write_bytes(
        (root / "CXR_png" / "MCUCXR_0001_0.png").read_bytes()
    )
    with pytest.raises(TableError, match=r"scan.png: the name is not"):
        read_tuberculosis(root)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_tuberculosis(tmp_path / "nowhere")


def test_both_through_the_datamodule(tmp_path: Path) -> None:
    tb = write_synthetic_tuberculosis(tmp_path / "tb", 40, size=24)
    dm = ChestXrayDataModule(
        CXRTable(csv=str(tb), format="tuberculosis"),
        labels=["Tuberculosis"],
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 1)
    covidx = write_synthetic_covidx(tmp_path / "covidx", 40, size=24)
    dm = ChestXrayDataModule(
        CXRTable(csv=str(covidx), format="covidx"),
        test=CXRTable(csv=str(covidx.parent / "test.txt"), format="covidx"),
        labels=CLASSES,
        split=(0.85, 0.15, 0.0),
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["target"].shape == (4, 3) and torch.all(batch["target"].sum(dim=1) == 1)
