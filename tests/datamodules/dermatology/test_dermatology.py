"""Dermatology: case tables in both layouts, label space from train only, padding never leaks,
the soft-target loss, SCIN conversion, and every bad-input case."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medxfer.data import ImageDecodeError, TableError
from medxfer.datamodules.dermatology import (
    OTHER,
    DermatologyDataModule,
    build_label_space,
    convert_scin,
    parse_differential,
    read_derm_cases,
    soft_targets,
    write_synthetic_derm,
)


@pytest.fixture(scope="module")
def derm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("derm")
    return {
        "columns": write_synthetic_derm(root / "a", n_cases=80, size=40, seed=0, layout="columns"),
        "rows": write_synthetic_derm(root / "a_rows", n_cases=80, size=40, seed=0, layout="rows"),
        "shifted": write_synthetic_derm(root / "b", n_cases=30, size=40, seed=1, shifted=True),
    }


def test_both_layouts_read_the_same_cases(derm: dict[str, Path]) -> None:
    cols, rows = read_derm_cases(derm["columns"]), read_derm_cases(derm["rows"])
    assert len(cols) == len(rows) == 80
    for key in ("id", "patient_id", "top_label", "fitzpatrick", "sex", "age_group"):
        assert cols[key].tolist() == rows[key].tolist()
    assert [[Path(p).name for p in ps] for ps in cols["paths"]] == [
        [Path(p).name for p in ps] for ps in rows["paths"]
    ]
    assert cols["paths"].map(len).between(1, 6).all()
    assert all(math.isclose(sum(d.values()), 1.0) for d in cols["differential"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Eczema:0.6|Psoriasis:0.4", {"Eczema": 0.6, "Psoriasis": 0.4}, id="pipe"),
        pytest.param("{'Eczema': 0.5, 'Acne': 0.5}", {"Eczema": 0.5, "Acne": 0.5}, id="scin-dict"),
        pytest.param("Melanoma", {"Melanoma": 1.0}, id="single"),
    ],
)
def test_differential_formats(text: str, expected: dict[str, float]) -> None:
    assert parse_differential(text, "case x") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("Eczema:0.6|Psoriasis:0.3", "sum to 0.9000", id="sum"),
        pytest.param("Eczema:abc", "does not parse", id="not-a-number"),
        pytest.param("{'Eczema': 0.5", "does not parse", id="broken-dict"),
        pytest.param("Eczema:1.2|Acne:-0.2", "negative", id="negative"),
    ],
)
def test_bad_differentials_name_the_case(text: str, message: str) -> None:
    with pytest.raises(TableError, match=message) as err:
        parse_differential(text, "cases.csv, line 7, case 'c9'")
    assert "case 'c9'" in str(err.value)


def _table(
    tmp_path: Path, rows: list[str], header: str = "case_id,image_path,differential,fitzpatrick"
) -> Path:
    (tmp_path / "x.jpg").write_bytes(b"")
    path = tmp_path / "cases.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_case_with_no_image_or_too_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _table(tmp_path, ["c1,,Eczema,II"])
    with pytest.raises(TableError, match=r"line 2, case 'c1': the case has no image"):
        read_derm_cases(path)
    path = _table(tmp_path, [f"c2,x{k}.jpg,Acne,III" for k in range(8)] + ["c3,y.jpg,Acne,IV"])
    with pytest.raises(
        TableError, match=r"case 'c2': the case has 8 images, more than max_images=6"
    ):
        read_derm_cases(path)
    with caplog.at_level("WARNING"):
        cases = read_derm_cases(path, truncate=True)
    assert cases["paths"].map(len).tolist() == [6, 1]
    assert cases.attrs["truncated"] == 1 and "1 case(s) had more than 6 images" in caplog.text


def test_unknown_fitzpatrick_names_row_and_column(tmp_path: Path) -> None:
    path = _table(tmp_path, ["c1,x.jpg,Eczema,FST3", "c2,x.jpg,Eczema,VII"])
    with pytest.raises(TableError, match=r"line 3, case 'c2', column 'fitzpatrick': 'VII'"):
        read_derm_cases(path)
    path = _table(
        tmp_path, ["c1,x.jpg,Eczema,FST3", "c2,x.jpg,Eczema,NONE_SELECTED", "c3,x.jpg,Eczema,6"]
    )
    assert read_derm_cases(path)["fitzpatrick"].tolist() == ["III", "none selected", "VI"]


def test_label_space_comes_from_train_only_and_the_rest_is_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    train = pd.DataFrame(
        {"differential": [{"A": 1.0}, {"A": 0.5, "B": 0.5}, {"C": 1.0}, {"B": 0.7, "D": 0.3}]}
    )
    space = build_label_space(train, n=2)
    assert space == ["A", "B", OTHER]  # A 1.5, B 1.2, C 1.0, D 0.3
    test = pd.DataFrame(
        {"differential": [{"E": 0.6, "A": 0.4}, {"C": 1.0}]}
    )  # E never seen in training
    with caplog.at_level("INFO"):
        t = soft_targets(test, space, "test")
    np.testing.assert_allclose(t, [[0.4, 0.0, 0.6], [0.0, 0.0, 1.0]])
    assert "mapped to 'Other'" in caplog.text and "'E': 1" in caplog.text


def test_datamodule_builds_the_label_space_from_its_train_split(derm: dict[str, Path]) -> None:
    dm = DermatologyDataModule(
        str(derm["columns"]),
        shifted={"b": str(derm["shifted"])},
        n_conditions=4,
        image_size=32,
        batch_size=4,
        num_workers=0,
        max_images=6,
    )
    dm.setup("fit")
    train_cases = read_derm_cases(derm["columns"])
    train_cases = train_cases[train_cases["id"].isin(dm.train_set.ids)]
    assert dm.label_names == build_label_space(train_cases, 4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 6, 3, 32, 32) and batch["mask"].shape == (4, 6)
    assert batch["mask"].dtype == torch.bool and batch["mask"].any(dim=1).all()
    assert torch.allclose(batch["target"].sum(dim=1), torch.ones(4))
    assert (batch["image"][~batch["mask"]] == 0).all()
    assert set(batch["groups"]) == {"skin_type", "sex", "age"}
    assert dm.eval_names == ["derm", "b"] and len(dm.test_dataloader()) == 2


def test_scin_conversion(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "case_id": ["-1", "-2", "-3"],
            "image_1_path": [
                "dataset/images/a.png",
                "dataset/images/b.png",
                "dataset/images/c.png",
            ],
            "image_2_path": ["dataset/images/a2.png", "", ""],
            "image_3_path": ["", "", ""],
            "fitzpatrick_skin_type": ["FST2", "NONE_SELECTED", "FST5"],
            "sex_at_birth": ["FEMALE", "MALE", "FEMALE"],
            "age_group": ["AGE_18_TO_29", "AGE_40_TO_49", "AGE_30_TO_39"],
        }
    ).to_csv(tmp_path / "scin_cases.csv", index=False)
    pd.DataFrame(
        {
            "case_id": ["-1", "-2", "-3"],
            "weighted_skin_condition_label": [
                "{'Eczema': 0.67, 'Psoriasis': 0.33}",
                "{'Acne': 1.0}",
                "",
            ],
            "dermatologist_fitzpatrick_skin_type_label_1": ["FST3", "", ""],
            "monk_skin_tone_label_us": ["3", "5", ""],
        }
    ).to_csv(tmp_path / "scin_labels.csv", index=False)
    out = convert_scin(
        tmp_path / "scin_cases.csv", tmp_path / "scin_labels.csv", tmp_path / "cases.csv"
    )
    cases = read_derm_cases(out)
    assert cases["id"].tolist() == ["-1", "-2"]  # case -3 has no weighted label
    assert cases["paths"].map(len).tolist() == [2, 1]
    assert cases["fitzpatrick"].tolist() == ["III", "none selected"]  # dermatologist label first
    assert cases["differential"][0] == pytest.approx({"Eczema": 0.67, "Psoriasis": 0.33})
    assert cases["monk"].tolist() == ["3", "5"]


# --- nothing accepted silently (issue 15) ------------------------------------------------------

CASES = "case_id,image_1_path,image_2_path,differential,fitzpatrick"


def test_case_row_twice_is_an_error_not_one_case_with_twice_the_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = ["c1,a.jpg,b.jpg,Eczema,II", "c2,c.jpg,,Acne,III", "c1,a.jpg,b.jpg,Eczema,II"]
    path = _table(tmp_path, rows, header=CASES)
    with pytest.raises(TableError) as err:
        read_derm_cases(path)
    assert str(err.value).startswith(f"{path}: lines 2, 4 hold the same case (case_id='c1')")
    with caplog.at_level("WARNING"):
        cases = read_derm_cases(path, drop_duplicates=True)
    assert [[Path(p).name for p in ps] for ps in cases["paths"]] == [["a.jpg", "b.jpg"], ["c.jpg"]]
    assert "dropped 1 repeated row(s) of the same case" in caplog.text


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param(
            ["c1,a.jpg,Eczema,II", "c1,b.jpg,Eczema,II", "c1,a.jpg,Eczema,II"],
            r"lines 2, 4 hold the same image of a case \(case_id='c1', image_path='a.jpg'\)",
            id="image-row-twice",
        ),
        pytest.param(
            ["c1,a.jpg,Eczema,II", "c1,b.jpg,Psoriasis,II"],
            r"lines 2, 3, case 'c1': column 'differential' differs between the case's rows: "
            r"\['Eczema', 'Psoriasis'\]",
            id="case-columns-differ",
        ),
        pytest.param(
            ["c1,a.jpg,Eczema,II", " ,b.jpg,Acne,II"], r"line 3: blank case_id", id="blank-id"
        ),
    ],
)
def test_rows_of_a_case_are_checked(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_derm_cases(_table(tmp_path, rows))


def test_misspelt_condition_suggests_the_declared_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"c{k},x.jpg,Eczema,II" for k in range(5)] + ["c9,x.jpg,Eczma:0.7|Acne:0.3,II"]
    path = _table(tmp_path, rows)
    with pytest.raises(TableError) as err:
        read_derm_cases(path, conditions=["Eczema", "Acne", "Psoriasis"])
    assert str(err.value) == (
        f"{path}, line 7, case 'c9', column 'differential': condition 'Eczma' is not in the "
        "declared conditions; did you mean 'Eczema'?"
    )
    with caplog.at_level("WARNING"):
        cases = read_derm_cases(path)  # nothing declared: read, with a warning
    assert len(cases) == 6
    assert "condition 'Eczma' (weight 0.7) looks like a misspelling of 'Eczema' (weight 5)" in (
        caplog.text
    )


def test_sex_and_monk_values_are_checked(tmp_path: Path) -> None:
    header = "case_id,image_path,differential,fitzpatrick,sex,monk"
    rows = ["c1,x.jpg,Acne,II,F,3", "c2,x.jpg,Acne,II,male,", "c3,x.jpg,Acne,II,,10.0"]
    cases = read_derm_cases(_table(tmp_path, rows, header))
    assert cases["sex"].tolist() == ["Female", "Male", "Unknown"]
    assert cases["monk"].tolist() == ["3", "unknown", "10"]
    path = _table(tmp_path, [*rows, "c4,x.jpg,Acne,II,X,2"], header)
    with pytest.raises(TableError, match=r"line 5, column 'sex': sex 'X' is not one of"):
        read_derm_cases(path)
    assert read_derm_cases(path, unknown_sex=True)["sex"].tolist()[-1] == "Unknown"
    path = _table(tmp_path, [*rows, "c4,x.jpg,Acne,II,F,11"], header)
    with pytest.raises(TableError, match=r"line 5, column 'monk': '11' is not a Monk skin tone"):
        read_derm_cases(path)


def test_verify_images_finds_a_corrupt_photo_at_setup(
    derm: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(derm["columns"].parent, root)
    table = root / derm["columns"].name
    last = read_derm_cases(table).iloc[-1]["paths"][-1]  # whichever split it lands in
    Path(last).write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    kw = dict(n_conditions=4, image_size=32, batch_size=4, num_workers=2)
    DermatologyDataModule(str(table), **kw).setup("fit")  # exists: not decoded by default
    with pytest.raises(ImageDecodeError, match=re.escape(f"could not decode image {last}")):
        DermatologyDataModule(str(table), verify_images=True, **kw).setup("fit")


def test_errors_name_the_physical_line_after_a_multi_line_differential(tmp_path: Path) -> None:
    # c1 spans lines 2-3 (a quoted differential with a line break), a blank line 4, c2 line 5
    path = tmp_path / "cases.csv"
    path.write_text(
        "case_id,image_path,differential,fitzpatrick\n"
        'c1,a.jpg,"Eczema:0.5|\nAcne:0.5",II\n\nc2,b.jpg,Acne,VII\n'
    )
    with pytest.raises(TableError) as err:
        read_derm_cases(path)
    assert str(err.value).startswith(
        f"{path}, line 5, case 'c2', column 'fitzpatrick': 'VII' is not a Fitzpatrick type"
    )
