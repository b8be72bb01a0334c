"""CheXpert and NIH ChestX-ray14 readers on CSVs in the exact upstream formats, and on the real
NIH file in ../shared/data."""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medxfer.data import TableError
from medxfer.datamodules import age_group
from medxfer.datamodules.chest_xray import CHEXPERT_LABELS, read_chexpert_csv, read_nih_csv

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS)


def _row(path: str, sex: str, age: int, fl: str, ap: str, **labels: str) -> str:
    return f"{path},{sex},{age},{fl},{ap}," + ",".join(
        labels.get(lab.replace(" ", "_"), "") for lab in CHEXPERT_LABELS
    )


@pytest.fixture
def chexpert_csv(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    rows = [
        _row(
            "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
            "Female",
            68,
            "Frontal",
            "AP",
            No_Finding="1.0",
        ),
        _row(
            "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg",
            "Female",
            87,
            "Frontal",
            "AP",
            Cardiomegaly="-1.0",
            Edema="1.0",
            Atelectasis="0.0",
            Pleural_Effusion="-1.0",
        ),
        _row(
            "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg",
            "Female",
            83,
            "Lateral",
            "",
            Cardiomegaly="1.0",
            Consolidation="-1.0",
        ),
        _row(
            "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg",
            "Male",
            41,
            "Frontal",
            "PA",
            Atelectasis="1.0",
            Consolidation="0.0",
        ),
    ]
    path = root / "train.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


NAN = math.nan


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("ones", [0, 1, 0, 1, 1], id="u-ones"),
        pytest.param("zeros", [0, 0, 0, 1, 0], id="u-zeros"),
        pytest.param("ignore", [0, NAN, 0, 1, NAN], id="u-ignore"),
    ],
)
def test_chexpert_uncertainty_policies(
    chexpert_csv: Path, policy: str, expected: list[float]
) -> None:
    table = read_chexpert_csv(chexpert_csv, uncertainty=policy)
    # row 2 (patient00002 study2): Atelectasis 0.0, Cardiomegaly -1, Consolidation blank, Edema 1, Effusion -1
    got = table.iloc[1][
        ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    ].tolist()
    assert [g if not math.isnan(g) else "nan" for g in got] == [
        e if not math.isnan(e) else "nan" for e in expected
    ]


def test_chexpert_columns_paths_and_frontal_filter(chexpert_csv: Path) -> None:
    table = read_chexpert_csv(chexpert_csv)
    assert len(table) == 4
    assert table["path"].iloc[0] == str(
        chexpert_csv.parent.parent
        / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    )
    assert table["id"].iloc[0] == "patient00001_study1_view1_frontal"
    assert table["patient_id"].tolist() == [
        "patient00001",
        "patient00002",
        "patient00002",
        "patient00003",
    ]
    assert table["view"].tolist() == ["AP", "AP", "Lateral", "PA"]
    assert table["line"].tolist() == [2, 3, 4, 5]
    # blank means negative (not mentioned); No Finding row has all five negative
    assert table.iloc[0][["Atelectasis", "Cardiomegaly", "Edema"]].tolist() == [0.0, 0.0, 0.0]
    frontal = read_chexpert_csv(chexpert_csv, frontal_only=True)
    assert frontal["view"].tolist() == ["AP", "AP", "PA"]
    subset = read_chexpert_csv(chexpert_csv, labels=["No Finding", "Support Devices"])
    assert subset["No Finding"].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_chexpert_missing_column_lists_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "Path,Sex,Age,Frontal/Lateral,Atelectasis\nx/patient00001/study1/view1_frontal.jpg,Male,3,Frontal,1.0\n"
    )
    with pytest.raises(TableError, match=r"missing required column\(s\) \['AP/PA'") as err:
        read_chexpert_csv(path, labels=["Atelectasis"])
    assert str(path) in str(err.value) and "found ['Path', 'Sex'" in str(err.value)


def test_chexpert_bad_label_value_names_line_and_column(chexpert_csv: Path) -> None:
    text = chexpert_csv.read_text().splitlines()
    text[3] = text[3].replace("Lateral,,,", "Lateral,,2.0,", 1)  # "No Finding" = 2.0 on line 4
    chexpert_csv.write_text("\n".join(text) + "\n")
    with pytest.raises(TableError, match=r"line 4, column 'No Finding': value '2.0'"):
        read_chexpert_csv(chexpert_csv, labels=["No Finding"])


def test_frontal_filter_that_empties_says_so(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        HEADER
        + "\n"
        + _row("d/train/patient00001/study1/view2_lateral.jpg", "Male", 50, "Lateral", "")
        + "\n"
    )
    with pytest.raises(TableError, match="frontal_only"):
        read_chexpert_csv(path, frontal_only=True)


NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def test_nih_header_with_commas_and_mapping_to_chexpert(tmp_path: Path) -> None:
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text(
        NIH_HEADER + ",\n"  # the 2017 file's trailing comma
        "00000001_000.png,Cardiomegaly|Effusion,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,81,F,AP,2500,2048,0.168,0.168,\n"
        "00000003_001.png,Nodule|Infiltration,1,3,74,F,PA,2500,2048,0.168,0.168,\n"
    )
    table = read_nih_csv(
        path, labels=["Cardiomegaly", "Pleural Effusion", "Lung Lesion", "Fracture", "Infiltration"]
    )
    assert table["id"].tolist() == ["00000001_000", "00000002_000", "00000003_001"]
    assert table["age"].tolist() == [58.0, 81.0, 74.0]
    assert table["sex"].tolist() == ["Male", "Female", "Female"]
    assert table["Pleural Effusion"].tolist() == [1.0, 0.0, 0.0]
    assert table["Lung Lesion"].tolist() == [0.0, 0.0, 1.0]
    assert table["Fracture"].isna().all()  # NIH has no fracture label: unknown, not negative
    assert table["Infiltration"].tolist() == [0.0, 0.0, 1.0]
    assert table["path"].iloc[0] == str(tmp_path / "images" / "00000001_000.png")


def test_nih_split_list_and_unknown_finding(tmp_path: Path) -> None:
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.write_text(
        NIH_HEADER + "\na.png,Effusion,0,1,50,M,PA,1,1,1,1\nb.png,Hernia,0,2,50,F,PA,1,1,1,1\n"
    )
    (tmp_path / "test_list.txt").write_text("b.png\n")
    assert read_nih_csv(path, split_list=tmp_path / "test_list.txt")["id"].tolist() == ["b"]
    path.write_text(
        NIH_HEADER + "\na.png,Effusion,0,1,50,M,PA,1,1,1,1\nb.png,Herniaa,0,2,50,F,PA,1,1,1,1\n"
    )
    with pytest.raises(
        TableError, match=r"line 3, column 'Finding Labels': unknown finding\(s\) \['Herniaa'\]"
    ):
        read_nih_csv(path)


def test_nih_reader_on_the_real_file(nih_subset: Path) -> None:
    table = read_nih_csv(
        nih_subset,
        labels=["Effusion", "Infiltration", "Atelectasis", "Cardiomegaly", "Pleural Effusion"],
    )
    raw = pd.read_csv(
        nih_subset, index_col=False, usecols=range(7)
    )  # independent parse of the first 7 columns
    assert len(table) == len(raw) == 1000
    assert table["patient_id"].nunique() == 264
    assert table["sex"].value_counts().to_dict() == {"Female": 509, "Male": 491}
    assert table["view"].value_counts().to_dict() == {"PA": 637, "AP": 363}
    expected = {
        f: int(raw["Finding Labels"].str.split("|").map(lambda s, f=f: f in s).sum())
        for f in ("Effusion", "Infiltration")
    }
    assert expected == {"Effusion": 170, "Infiltration": 162}
    assert int(table["Effusion"].sum()) == 170 and int(table["Infiltration"].sum()) == 162
    assert (table["Effusion"] == table["Pleural Effusion"]).all()
    assert table["age"].between(24, 94).all()
    assert all(Path(p).is_file() for p in table["path"])


# --- the whole row is checked (issue 13, item 1) ----------------------------------------------

#: A full CheXpert row (19 fields) whose Edema (field 11) is 1.0 and Support Devices -1.0.
ROW = _row(
    "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
    "Male",
    50,
    "Frontal",
    "AP",
    Edema="1.0",
    Support_Devices="-1.0",
)


def _fields(row: str, n: int) -> str:
    return ",".join(row.split(",")[:n])


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [ROW, _fields(ROW, 10), ROW],
            "line 3 has 10 fields, the header 19: column 'Edema' is missing",
            id="truncated-to-10-of-19",
        ),
        pytest.param(
            [ROW, ROW + ",1.0"],
            "line 3 has 20 fields, the header 19: there are fields after the last column "
            "'Support Devices'",
            id="one-field-too-many",
        ),
        pytest.param(
            [ROW + ",", ROW],
            "line 2 has 20 fields, the header 19: there are fields after the last column "
            "'Support Devices'",
            id="too-many-on-the-first-row",
        ),
        pytest.param(
            [ROW, ROW + ",1.0", _fields(ROW, 18)],
            "line 3 has 20 fields, the header 19: there are fields after the last column "
            "'Support Devices'",
            id="one-too-many-then-one-too-few",
        ),
        pytest.param(
            [ROW, "", _fields(ROW, 18)],
            "line 4 has 18 fields, the header 19: column 'Support Devices' is missing",
            id="truncated-after-a-blank-line",
        ),
        pytest.param(
            ['"' + ROW.replace(",", '","') + '"', _fields(ROW, 5)],
            "line 3 has 5 fields, the header 19: column 'No Finding' is missing",
            id="quoted-file-truncated",
        ),
    ],
)
def test_chexpert_row_with_wrong_field_count_names_file_line_and_column(
    tmp_path: Path, rows: list[str], expected: str
) -> None:
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, rows)
    with pytest.raises(TableError) as err:
        read_chexpert_csv(path)
    assert str(err.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            ["a.png,Effusion,0,1,50,M,PA,1,1,1,1", "b.png,Mass,0,2,50,F,PA,1,1"],
            "line 3 has 9 fields, the header 11: column 'OriginalImagePixelSpacing[x]' is missing",
            id="truncated",
        ),
        pytest.param(
            [
                "a.png,Effusion,0,1,50,M,PA,1,1,1,1",
                "b.png,Effusion,0,1,50,M,PA,1,1,1,1,7",
                "c.png,Mass,0,2,50,F,PA,1,1,1",
            ],
            "line 3 has 12 fields, the header 11: there are fields after the last column "
            "'OriginalImagePixelSpacing[y]'",
            id="one-too-many-then-one-too-few",
        ),
    ],
)
def test_nih_row_with_wrong_field_count_names_file_line_and_column(
    tmp_path: Path, rows: list[str], expected: str
) -> None:
    path = _write(tmp_path / "Data_Entry_2017.csv", NIH_HEADER, rows)
    with pytest.raises(TableError) as err:
        read_nih_csv(path)
    assert str(err.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"Support_Devices": "2.0"},
            "column 'Support Devices': value '2.0' is not one of 1.0, 0.0, -1.0 or blank",
            id="unrequested-label-out-of-range",
        ),
        pytest.param(
            {"Fracture": "yes"},
            "column 'Fracture': value 'yes' is not one of 1.0, 0.0, -1.0 or blank",
            id="unrequested-label-text",
        ),
        pytest.param(
            {"sex": "X"},
            "column 'Sex': sex 'X' is not one of F, M, Female, Male (any case), Unknown or "
            "blank; set unknown_sex: true to read other values as Unknown",
            id="sex",
        ),
        pytest.param(
            {"fl": "lateral"},
            "column 'Frontal/Lateral': value 'lateral' is not one of 'Frontal', 'Lateral'",
            id="frontal-lateral",
        ),
        pytest.param(
            {"ap": "LA"},
            "column 'AP/PA': value 'LA' is not one of 'AP', 'PA', 'LL', 'RL' or blank",
            id="ap-pa",
        ),
    ],
)
def test_chexpert_whole_row_schema_names_line_and_column(
    tmp_path: Path, fields: dict[str, str], expected: str
) -> None:
    meta = {"sex": "Female", "fl": "Frontal", "ap": "PA"}
    meta.update((k, fields.pop(k)) for k in list(fields) if k in meta)
    bad = _row(
        "CheXpert-v1.0/train/patient00002/study1/view1_frontal.jpg",
        meta["sex"],
        60,
        meta["fl"],
        meta["ap"],
        **fields,
    )
    path = _write(
        tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, [ROW, ROW.replace("view1", "view2"), bad]
    )
    with pytest.raises(TableError) as err:
        read_chexpert_csv(path)  # the 5 competition labels: the bad column is not requested
    assert str(err.value) == f"{path}: line 4, {expected}"


# --- groups: age 0 is unknown, LL / RL are decubitus views (item 3) ----------------------------


def test_chexpert_age_zero_is_unknown_and_ll_rl_are_one_decubitus_group(tmp_path: Path) -> None:
    rows = [
        _row("d/train/patient00001/study1/view1_frontal.jpg", "Female", 0, "Frontal", "LL",
             Edema="1", Cardiomegaly="-1"),
        _row("d/train/patient00002/study1/view1_frontal.jpg", "Male", 0, "Frontal", "RL",
             Edema="0", Cardiomegaly="1"),
        _row("d/train/patient00003/study1/view1_frontal.jpg", "Unknown", 39, "Frontal", "",
             Edema="-1.0"),
        _row("d/train/patient00003/study1/view2_lateral.jpg", "", 81, "Lateral", ""),
    ]  # fmt: skip
    path = _write(tmp_path / "d" / "train.csv", HEADER, rows)
    table = read_chexpert_csv(path, uncertainty="zeros")
    assert table["age"].isna().tolist() == [True, True, False, False]
    assert [age_group(a, (40, 60, 80)) for a in table["age"]] == [
        "unknown",
        "unknown",
        "<40",
        "80+",
    ]
    assert table["view"].tolist() == ["Decubitus", "Decubitus", "Unknown", "Lateral"]
    assert table["sex"].tolist() == ["Female", "Male", "Unknown", "Unknown"]
    # integer spellings 1 / 0 / -1 read as 1.0 / 0.0 / -1.0 (U-Zeros: -1 -> 0)
    assert table["Edema"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert table["Cardiomegaly"].tolist() == [0.0, 1.0, 0.0, 0.0]


# --- one way of opening a table: plain or gzip (item 2) ----------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Data_Entry_2017_v2020.csv.gz", id="csv.gz"),
        pytest.param("Data_Entry_2017_v2020.csv", id="gzip-named-csv"),
    ],
)
def test_nih_reads_the_real_file_gzipped(nih_subset: Path, tmp_path: Path, name: str) -> None:
    packed = tmp_path / name
    packed.write_bytes(gzip.compress(nih_subset.read_bytes()))
    table = read_nih_csv(packed, labels=["Effusion", "Pleural Effusion"])
    raw = pd.read_csv(nih_subset, index_col=False, usecols=range(7))  # independent parse
    assert table["id"].tolist() == raw["Image Index"].str.removesuffix(".png").tolist()
    assert table["age"].tolist() == raw["Patient Age"].astype(float).tolist()
    assert int(table["Effusion"].sum()) == 170  # ../shared/data/README.md
    assert table["line"].tolist() == list(range(2, len(raw) + 2))


def test_chexpert_reads_gzip_whatever_its_name(chexpert_csv: Path) -> None:
    chexpert_csv.write_bytes(gzip.compress(chexpert_csv.read_bytes()))  # still "train.csv"
    table = read_chexpert_csv(chexpert_csv)
    assert table["id"].tolist() == [
        "patient00001_study1_view1_frontal",
        "patient00002_study2_view1_frontal",
        "patient00002_study1_view2_lateral",
        "patient00003_study1_view1_frontal",
    ]
    assert table["Edema"].tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("reader", "content", "expected"),
    [
        pytest.param(
            read_nih_csv,
            (
                NIH_HEADER
                + "\na.png,Effusion,0,1,50,M,PA,1,1,1,1\nb\xe9.png,Mass,0,2,50,F,PA,1,1,1,1\n"
            ).encode("latin-1"),
            "line 3 is not UTF-8 text",
            id="nih-latin-1",
        ),
        pytest.param(
            read_nih_csv,
            gzip.compress(
                (NIH_HEADER + "\nb\xe9.png,Mass,0,2,50,F,PA,1,1,1,1\n").encode("latin-1")
            ),
            "line 2 is not UTF-8 text",
            id="nih-gzip-latin-1",
        ),
        pytest.param(
            read_chexpert_csv,
            gzip.compress(b"Path,Sex,Age")[:12],
            "not a readable gzip file",
            id="chexpert-cut-gzip",
        ),
    ],
)
def test_unreadable_table_names_file_and_line(
    tmp_path: Path, reader, content: bytes, expected: str
) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(TableError, match=re.escape(f"{path}: {expected}")):
        reader(path)


# --- NIH's "Patient Sex" spelling (item 2) -----------------------------------------------------


def test_nih_patient_sex_spelling(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "Data_Entry_2017_v2020.csv",
        NIH_HEADER.replace("Patient Gender", "Patient Sex"),
        ["a.png,Effusion,0,1,50,M,PA,1,1,1,1", "b.png,Mass,0,2,50,F,PA,1,1,1,1",
         "c.png,Mass,0,3,50,,PA,1,1,1,1"],
    )  # fmt: skip
    assert read_nih_csv(path)["sex"].tolist() == ["Male", "Female", "Unknown"]


def test_nih_patient_sex_spelling_on_the_real_file(nih_subset: Path, tmp_path: Path) -> None:
    text = nih_subset.read_text().replace("Patient Gender", "Patient Sex", 1)
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text(text)
    table = read_nih_csv(tmp_path / "Data_Entry_2017_v2020.csv")
    assert table["sex"].value_counts().to_dict() == {"Female": 509, "Male": 491}  # README


# --- whole columns match the per-row definition (item 4) ----------------------------------------------


def _chexpert_paths(rng: np.random.Generator, n: int) -> list[str]:
    """Paths in several layouts (prefixes, patient number widths, extensions) and a few odd
    ones: absolute, a ``patients`` folder before the match, text after the view."""
    prefixes = ["CheXpert-v1.0/train/", "CheXpert-v1.0/valid/", "CheXpert-v1.0-small/train/"]
    paths = [
        f"{prefixes[rng.integers(3)]}patient{rng.integers(1, 10 ** rng.integers(1, 7)):05d}/"
        f"study{rng.integers(1, 40)}/view{rng.integers(1, 3)}_frontal"
        f"{'.jpg' if rng.random() < 0.9 else '.png'}"
        for _ in range(n)
    ]
    return [
        *paths,
        "/data/CheXpert-v1.0/train/patient00042/study3/view1_frontal.jpg",
        "x/patients/patient7/study2/view2_lateral.jpg",
        "x/patient8/study1/view1_frontal/extra.jpg",
        "patient9/study10/view1_frontal",
    ]


@pytest.mark.parametrize(
    "reader", [pytest.param("chexpert", id="chexpert"), pytest.param("nih", id="nih")]
)
def test_columns_match_the_per_row_definition(tmp_path: Path, reader: str) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    if reader == "chexpert":
        paths = _chexpert_paths(rng, 3000)
        ids = [re.search(r"(patient\d+)/(study\d+)/([^/.]+)", p).groups() for p in paths]  # type: ignore[union-attr]
        # one path per image: an image listed twice is an error (tested on its own)
        names = [
            p for p, repeat in zip(paths, pd.Series(ids).duplicated(), strict=True) if not repeat
        ]
        rows = [_row(p, "Male", 50, "Frontal", "AP") for p in names]
        path = _write(tmp_path / "d" / "train.csv", HEADER, rows)
        matches = [re.search(r"(patient\d+)/(study\d+)/([^/.]+)", p) for p in names]
        expected = {
            "id": ["_".join(m.groups()) for m in matches],
            "patient_id": [m.group(1) for m in matches],
        }
    else:
        names = [f"{i:08d}_{rng.integers(0, 20):03d}.png" for i in range(3000)]
        rows = [f"{n},No Finding,0,{i},50,M,PA,1,1,1,1" for i, n in enumerate(names)]
        path = _write(tmp_path / "Data_Entry_2017.csv", NIH_HEADER, rows)
        expected = {"id": [n[: -len(".png")] for n in names]}
    expected["path"] = [str(root / name) for name in names]  # the per-row definition
    table = (
        read_chexpert_csv(path, root=root)
        if reader == "chexpert"
        else read_nih_csv(path, image_dir=root)
    )
    for column, values in expected.items():
        assert table[column].tolist() == values, column


# --- nothing accepted silently (issue 15) ------------------------------------------------------

FRONT = "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg"


def test_chexpert_image_listed_twice_names_both_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = _row(FRONT.replace("patient00001", "patient00003"), "Male", 40, "Frontal", "PA")
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, [ROW, other, ROW])
    with pytest.raises(TableError) as err:
        read_chexpert_csv(path)
    assert str(err.value).startswith(
        f"{path}: lines 2, 4 hold the same image (id='patient00001_study1_view1_frontal'); "
        "remove the copies, or set drop_duplicates: true"
    )
    with caplog.at_level(logging.WARNING):
        table = read_chexpert_csv(path, drop_duplicates=True)
    assert table["line"].tolist() == [2, 3]
    assert "dropped 1 repeated row(s)" in caplog.text
    # copies that differ (here in an unrequested label) cannot be dropped
    changed = ROW.replace(",1.0,", ",0.0,", 1)
    assert changed != ROW
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, [ROW, changed])
    with pytest.raises(TableError, match=r"lines 2, 3 hold the same image .*the copies differ"):
        read_chexpert_csv(path, drop_duplicates=True)


@pytest.mark.parametrize("folder", ["CheXpert-v1.0", "Données/CheXpert-v1.0"])
def test_chexpert_ids_of_ascii_and_non_ascii_paths(tmp_path: Path, folder: str) -> None:
    # characters, not bytes: "é" is two bytes in UTF-8, so a byte cut would shift the ids
    paths = [
        f"{folder}/train/patient0004{k}/study{k + 1}/view{k % 2 + 1}_frontal.jpg" for k in range(3)
    ]
    rows = [_row(p, "Male", 50, "Frontal", "PA") for p in paths]
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, rows)
    table = read_chexpert_csv(path, root=tmp_path)
    # the reference definition, one path at a time
    assert table["id"].tolist() == [
        "_".join(re.search(r"(patient\d+)/(study\d+)/([^/.]+)", p).groups()) for p in paths
    ]
    assert table["id"].tolist()[0] == "patient00040_study1_view1_frontal"
    assert table["patient_id"].tolist() == [f"patient0004{k}" for k in range(3)]
    assert table["path"].tolist() == [str(tmp_path / p) for p in paths]


def test_chexpert_paths_that_differ_after_the_view_are_the_same_image(tmp_path: Path) -> None:
    # both name patient00001_study1_view1_frontal: the id, not the path, must be unique
    png = ROW.replace("view1_frontal.jpg", "view1_frontal.png")
    assert png != ROW
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, [ROW, png])
    with pytest.raises(
        TableError, match=r"lines 2, 3 hold the same image \(id='patient00001_study"
    ):
        read_chexpert_csv(path)


@pytest.mark.parametrize("age", [pytest.param("-1", id="negative"), pytest.param("121", id="121")])
def test_chexpert_age_outside_0_120_names_line_and_column(tmp_path: Path, age: str) -> None:
    bad = _row(FRONT.replace("view1", "view2"), "Male", 0, "Frontal", "PA").replace(
        ",0,", f",{age},", 1
    )
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, [ROW, bad])
    with pytest.raises(TableError) as err:
        read_chexpert_csv(path)
    assert str(err.value) == f"{path}: line 3, column 'Age': age {age} is outside [0, 120] years"


def test_chexpert_sex_spellings_and_unknown_sex(tmp_path: Path) -> None:
    spellings = ["Female", "Male", "F", "m", "female", "MALE", "Unknown", "", "X"]
    rows = [
        _row(f"CheXpert-v1.0/train/patient{k:05d}/study1/view1_frontal.jpg", s, 50, "Frontal", "PA")
        for k, s in enumerate(spellings)
    ]
    path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, rows)
    with pytest.raises(TableError, match=r"line 10, column 'Sex': sex 'X' is not one of"):
        read_chexpert_csv(path)
    expected = [
        "Female",
        "Male",
        "Female",
        "Male",
        "Female",
        "Male",
        "Unknown",
        "Unknown",
        "Unknown",
    ]
    assert read_chexpert_csv(path, unknown_sex=True)["sex"].tolist() == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(
            "c.png,Mass,0,3,50,X,PA,1,1,1,1",
            "line 4, column 'Patient Gender': sex 'X' is not one of",
            id="sex",
        ),
        pytest.param(
            "c.png,Mass,0,3,412,M,PA,1,1,1,1",
            "line 4, column 'Patient Age': age 412 is outside [0, 120] years",
            id="age",
        ),
        pytest.param(
            "c.png,Mass,0,3,50,M,LL,1,1,1,1",
            "line 4, column 'View Position': value 'LL' is not one of 'PA', 'AP'",
            id="view",
        ),
        pytest.param(
            "c.png,Mass,0,,50,M,PA,1,1,1,1", "line 4, column 'Patient ID': blank", id="patient"
        ),
        pytest.param(
            "a.png,Effusion,0,1,50,M,PA,1,1,1,1",
            "lines 2, 4 hold the same image (id='a.png')",
            id="duplicate",
        ),
        pytest.param(  # the table in sorted order, as the real one: a shortcut must not miss it
            "b.png,Mass,0,2,50,F,AP,1,1,1,1",
            "lines 3, 4 hold the same image (id='b.png')",
            id="duplicate-sorted",
        ),
    ],
)
def test_nih_every_used_column_is_checked(tmp_path: Path, row: str, expected: str) -> None:
    path = _write(
        tmp_path / "Data_Entry_2017_v2020.csv",
        NIH_HEADER,
        ["a.png,Effusion,0,1,50,M,PA,1,1,1,1", "b.png,Mass,0,2,50,F,AP,1,1,1,1", row],
    )
    with pytest.raises(TableError) as err:
        read_nih_csv(path)
    assert str(err.value).startswith(f"{path}: {expected}")


def test_negative_age_is_never_binned() -> None:
    assert age_group(0.0, (40, 60)) == "<40"
    with pytest.raises(ValueError, match="negative"):
        age_group(-1.0, (40, 60))


# --- several problems: the first one checked is named -------------------------------------


@pytest.mark.parametrize(
    ("reader", "rows", "expected"),
    [
        pytest.param(  # a bad sex on line 2 and a bad label on line 3: the labels come first
            "chexpert",
            [
                _row(FRONT, "X", 40, "Frontal", "AP"),
                _row(FRONT.replace("00001", "00002"), "Male", 40, "Frontal", "AP", Edema="2.0"),
            ],
            "line 3, column 'Edema': value '2.0' is not one of",
            id="label-before-sex",
        ),
        pytest.param(  # a bad view on line 2 and a bad path on line 3: the paths come first
            "chexpert",
            [
                _row(FRONT, "Male", 40, "Frontal", "XY"),
                _row("CheXpert-v1.0/train/study1/view1.jpg", "Male", 40, "Frontal", "AP"),
            ],
            "line 3, column Path: 'CheXpert-v1.0/train/study1/view1.jpg' is not of the form",
            id="path-before-view",
        ),
        pytest.param(  # a bad sex and a bad age on line 2: the age comes first
            "chexpert",
            [_row(FRONT, "X", 130, "Frontal", "AP")],
            "line 2, column 'Age': age 130 is outside",
            id="age-before-sex",
        ),
        pytest.param(
            "nih",
            ["a.png,Cancer,0,1,50,M,PA,1,1,1,1", " ,Mass,0,2,50,F,AP,1,1,1,1"],
            "line 3, column 'Image Index': blank",
            id="image-before-finding",
        ),
        pytest.param(
            "nih",
            ["a.png,Mass,0,1,50,Q,PA,1,1,1,1", "b.png,Cancer,0,,50,F,AP,1,1,1,1"],
            "line 3, column 'Patient ID': blank",
            id="patient-before-finding-and-sex",
        ),
        pytest.param(
            "nih",
            ["a.png,Mass,0,1,50,Q,PA,1,1,1,1", "b.png,Cancer,0,2,50,F,AP,1,1,1,1"],
            "line 3, column 'Finding Labels': unknown finding(s) ['Cancer']",
            id="finding-before-sex",
        ),
    ],
)
def test_of_several_problems_the_first_one_checked_is_named(
    tmp_path: Path, reader: str, rows: list[str], expected: str
) -> None:
    if reader == "chexpert":
        path = _write(tmp_path / "CheXpert-v1.0" / "train.csv", HEADER, rows)
    else:
        path = _write(tmp_path / "Data_Entry_2017_v2020.csv", NIH_HEADER, rows)
    with pytest.raises(TableError) as err:
        read_chexpert_csv(path) if reader == "chexpert" else read_nih_csv(path)
    assert str(err.value).startswith(f"{path}: {expected}")


# --- the file as the readers open it -------------------------------------------------------


def test_a_header_only_table_is_named_not_blamed_on_a_filter(tmp_path: Path) -> None:
    """Issue 25: a CheXpert table without rows was reported as 'every image is lateral'."""
    none = _write(tmp_path / "none" / "CheXpert-v1.0" / "train.csv", HEADER, [])
    nih_none = _write(tmp_path / "none.csv", NIH_HEADER, [])
    for path, read in (
        (none, lambda: read_chexpert_csv(none, frontal_only=True)),
        (nih_none, lambda: read_nih_csv(nih_none)),
    ):
        with pytest.raises(TableError) as err:
            read()
        assert str(err.value).startswith(f"{path}: the table has no rows (only its header")


def test_nih_label_asked_for_twice_is_one_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", NIH_HEADER, ["a.png,Edema|Mass,0,1,50,M,PA,1,1,1,1"])
    table = read_nih_csv(path, ["Edema", "Mass", "Edema"])
    assert [c for c in table.columns if c in ("Edema", "Mass")] == ["Edema", "Mass"]
    assert table[["Edema", "Mass"]].to_numpy().tolist() == [[1.0, 1.0]]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_table_read_from_a_pipe(tmp_path: Path) -> None:
    rows = ["b.png,Mass,0,2,50,F,AP,1,1,1,1", '"a.png",Edema,0,1,50,M,PA,1,1,1,1']
    for i, body in enumerate((rows[:1], rows)):  # unquoted (pandas' fast path), quoted
        regular = _write(tmp_path / f"regular{i}.csv", NIH_HEADER, body)
        fifo = tmp_path / f"fifo{i}.csv"
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_bytes, args=(regular.read_bytes(),))
        writer.start()
        try:
            from_pipe = read_nih_csv(fifo, image_dir=tmp_path)
        finally:
            writer.join(timeout=10)
        expected = read_nih_csv(regular, image_dir=tmp_path)
        pd.testing.assert_frame_equal(
            from_pipe.drop(columns="source"), expected.drop(columns="source")
        )


def test_nih_image_names_read_as_numbers_in_one_part_of_a_large_file(tmp_path: Path) -> None:
    # > 5 MB: pandas parses the file in parts on several threads; the first parts hold
    # numbers only, the last text, so the column comes back as a mix of both
    rows = [f"{i},No Finding,0,{i},50,M,PA,2500,2048,0.143,0.143" for i in range(1, 100_001)]
    rows += [f"x{i}.png,Mass,0,{i},50,F,AP,2500,2048,0.143,0.143" for i in range(20_000)]
    path = _write(tmp_path / "Data_Entry_2017_v2020.csv", NIH_HEADER, rows)
    table = read_nih_csv(path)
    assert table["id"].iloc[[0, 99_999, 100_000, -1]].tolist() == ["1", "100000", "x0", "x19999"]
    assert table["patient_id"].iloc[[0, -1]].tolist() == ["nih1", "nih19999"]
