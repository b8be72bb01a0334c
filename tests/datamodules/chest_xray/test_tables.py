"""CheXpert and NIH ChestX-ray14 readers on CSVs in the exact upstream formats, and on the real
NIH file in ../shared/data."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from medxfer.data import TableError
from medxfer.datamodules import CHEXPERT_LABELS, read_chexpert_csv, read_nih_csv

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
