"""Mammography: DICOM decoding (MONOCHROME1, windowing), exam lists, horizon labels at the
edges, oversampling, laterality swap, the focal loss, and every bad-input case."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from medxfer.data import ImageDecodeError, TableError
from medxfer.datamodules.mammography import (
    MammographyDataModule,
    horizon_labels,
    positive_weights,
    read_exam_list,
    swap_laterality,
    write_synthetic_mammo,
)
from medxfer.tasks import MultiViewClassifier

NAN = float("nan")


@pytest.mark.parametrize(
    ("cancer", "follow", "expected"),
    [
        pytest.param(39.0, 60.0, [0, 0, 0, 0, 1], id="cancer-at-39"),
        pytest.param(40.0, 60.0, [0, 0, 0, 0, 0], id="cancer-at-40"),
        pytest.param(NAN, 20.0, [0, 0, 0, NAN, NAN], id="short-follow-up-masked"),
        pytest.param(NAN, 39.0, [0, 0, 0, 0, 0], id="follow-up-exactly-39"),
        pytest.param(2.0, 2.0, [1, 1, 1, 1, 1], id="early-cancer"),
    ],
)
def test_horizon_labels_at_the_edges(cancer: float, follow: float, expected: list[float]) -> None:
    got = horizon_labels(cancer, follow, (3, 12, 15, 27, 39))
    assert [("nan" if math.isnan(g) else g) for g in got] == [
        ("nan" if math.isnan(e) else e) for e in expected
    ]


HEADER = "exam_id,patient_id,laterality,view,image_path,cancer_months,followup_months,density"


def _exam(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "exams.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


FOUR = [
    "e1,p1,L,CC,a.dcm,,40,B",
    "e1,p1,R,CC,b.dcm,,40,B",
    "e1,p1,L,MLO,c.dcm,,40,B",
    "e1,p1,R,MLO,d.dcm,,40,B",
]


def test_views_are_put_in_fixed_order(tmp_path: Path) -> None:
    exams = read_exam_list(_exam(tmp_path, list(reversed(FOUR))))
    assert [Path(p).name for p in exams["paths"][0]] == ["a.dcm", "b.dcm", "c.dcm", "d.dcm"]
    assert exams["39m"].tolist() == [0.0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param(
            [*FOUR[:3], "e1,p1,R,CC,x.dcm,,40,B"], r"exam 'e1': duplicate view R-CC", id="duplicate"
        ),
        pytest.param(
            [*FOUR[:3], "e1,p1,X,MLO,d.dcm,,40,B"],
            r"line 5, column 'laterality': 'X' is not one of \['L', 'R'\]",
            id="laterality",
        ),
        pytest.param(
            [*FOUR[:3], "e1,p1,R,ML,d.dcm,,40,B"],
            r"line 5, column 'view': 'ML' is not one of \['CC', 'MLO'\]",
            id="view",
        ),
        pytest.param(FOUR[:3], r"exam 'e1': missing view\(s\) \['R-MLO'\]", id="missing-view"),
        pytest.param(
            [*FOUR[:3], "e1,p1,R,MLO,d.dcm,-3,40,B"],
            r"line 5, column 'cancer_months': '-3'",
            id="negative-months",
        ),
        pytest.param(
            [*FOUR[:3], "e1,p1,R,MLO,d.dcm,,soon,B"],
            r"line 5, column 'followup_months': 'soon'",
            id="non-numeric",
        ),
        pytest.param(
            [*FOUR[:3], "e1,p1,R,MLO,d.dcm,,40,E"], r"line 5, column 'density': 'E'", id="density"
        ),
    ],
)
def test_bad_exam_lists(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_exam_list(_exam(tmp_path, rows))


def test_missing_view_allowed_gets_a_mask(tmp_path: Path) -> None:
    exams = read_exam_list(_exam(tmp_path, FOUR[:3]), allow_missing_views=True)
    assert exams["mask"][0] == [True, True, True, False] and exams["paths"][0][3] == ""


def test_laterality_swap_moves_the_right_images() -> None:
    image = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 1, 2, 2)  # slot k holds value k
    mask = torch.tensor([True, True, False, True])
    swapped, m = swap_laterality(image, mask)
    assert swapped[:, 0, 0, 0].tolist() == [1.0, 0.0, 3.0, 2.0]  # L-CC<->R-CC, L-MLO<->R-MLO
    assert m.tolist() == [True, True, True, False]


def test_oversampling_gives_positives_about_half(tmp_path: Path) -> None:
    targets = torch.tensor([[0.0, 1.0]] * 10 + [[0.0, 0.0]] * 90 + [[NAN, NAN]] * 20)
    w = positive_weights(targets)
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(w, 20000, replacement=True, generator=g)
    rate = (draws < 10).float().mean().item()
    assert abs(rate - 0.5) < 0.02


@pytest.fixture(scope="module")
def exams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mammo")
    return {
        "a": write_synthetic_mammo(root / "a", n_exams=40, size=48, seed=0),
        "b": write_synthetic_mammo(root / "b", n_exams=12, size=48, seed=1, shifted=True),
    }


def test_datamodule_and_task_on_synthetic_dicom(exams: dict[str, Path], tiny_trainer) -> None:
    dm = MammographyDataModule(
        str(exams["a"]),
        shifted={"site_b": str(exams["b"])},
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 4, 3, 32, 32) and batch["mask"].all()
    # more than 8 bits (windowed DICOM): float16 in [0, 1], normalised by the task
    assert batch["image"].dtype == torch.float16
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["target"].shape == (4, 5) and set(batch["groups"]) == {"density", "site"}
    task = MultiViewClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names, checkpointing=True
    )
    assert (
        len(task.head.heads) == 5
        and task.head.heads[0][0].in_features == 4 * task.backbone.num_features
    )
    trainer = tiny_trainer(max_steps=2, limit_test_batches=None)
    trainer.fit(task, datamodule=dm)
    results = trainer.test(task, datamodule=dm, verbose=False)
    assert "test/mammo/auroc/39m" in results[0] and "test/site_b/auroc/39m" in results[1]


def test_vindr_and_cbis_ddsm_converters(tmp_path: Path) -> None:
    from medxfer.datamodules.mammography import convert_cbis_ddsm, convert_vindr

    pd.DataFrame(
        {
            "study_id": ["s1"] * 4 + ["s2"] * 4,
            "series_id": ["x"] * 8,
            "image_id": [f"i{k}" for k in range(8)],
            "laterality": ["L", "R", "L", "R"] * 2,
            "view_position": ["CC", "CC", "MLO", "MLO"] * 2,
            "breast_birads": [
                "BI-RADS 1",
                "BI-RADS 2",
                "BI-RADS 1",
                "BI-RADS 2",
                "BI-RADS 5",
                "BI-RADS 1",
                "BI-RADS 5",
                "BI-RADS 1",
            ],
            "breast_density": ["DENSITY C"] * 4 + ["DENSITY B"] * 4,
        }
    ).to_csv(tmp_path / "breast-level_annotations.csv", index=False)
    exams = read_exam_list(
        convert_vindr(tmp_path / "breast-level_annotations.csv", tmp_path / "vindr.csv")
    )
    assert exams["id"].tolist() == ["s1", "s2"] and exams["density"].tolist() == ["C", "B"]
    assert exams["39m"].tolist() == [0.0, 1.0]
    assert exams["paths"][1][0].endswith("images/s2/i4.dicom")

    pd.DataFrame(
        {
            "patient_id": ["P_1", "P_1", "P_2"],
            "breast_density": ["3", "3", "1"],
            "left or right breast": ["LEFT", "LEFT", "RIGHT"],
            "image view": ["CC", "MLO", "CC"],
            "pathology": ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"],
            "image file path": ["a/1.dcm", "a/2.dcm", "b/1.dcm"],
        }
    ).to_csv(tmp_path / "mass_case_description_train_set.csv", index=False)
    out = convert_cbis_ddsm(
        [tmp_path / "mass_case_description_train_set.csv"], tmp_path / "cbis.csv"
    )
    exams = read_exam_list(out, allow_missing_views=True)
    assert exams["mask"].tolist() == [[True, False, True, False], [False, True, False, False]]
    assert exams["39m"].tolist() == [1.0, 0.0] and exams["density"].tolist() == ["C", "A"]


# --- nothing accepted silently (issue 15) ------------------------------------------------------


def test_a_row_listed_twice_names_both_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _exam(tmp_path, [*FOUR, FOUR[0]])
    with pytest.raises(TableError) as err:
        read_exam_list(path)
    assert str(err.value).startswith(
        f"{path}: lines 2, 6 hold the same image row (exam_id='e1', laterality='L', view='CC', "
        "image_path='a.dcm'); remove the copies, or set drop_duplicates: true"
    )
    with caplog.at_level("WARNING"):
        exams = read_exam_list(path, drop_duplicates=True)
    assert [Path(p).name for p in exams["paths"][0]] == ["a.dcm", "b.dcm", "c.dcm", "d.dcm"]
    assert "dropped 1 repeated row(s)" in caplog.text
    with pytest.raises(TableError, match=r"lines 2, 6 hold the same image row .*copies differ"):
        read_exam_list(_exam(tmp_path, [*FOUR, "e1,p1,L,CC,a.dcm,,41,B"]), drop_duplicates=True)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param("e1,p1,R,MLO, ,,40,B", r"line 5, column 'image_path': blank", id="blank-path"),
        pytest.param(",p1,R,MLO,d.dcm,,40,B", r"line 5, column 'exam_id': blank", id="blank-exam"),
    ],
)
def test_blank_ids_and_paths_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_exam_list(_exam(tmp_path, [*FOUR[:3], row]))


def test_site_must_agree_between_the_rows_of_an_exam(tmp_path: Path) -> None:
    path = tmp_path / "exams.csv"
    sites = ["a", "a", "a", "b"]
    path.write_text(
        HEADER + ",site\n" + "\n".join(f"{r},{s}" for r, s in zip(FOUR, sites, strict=True)) + "\n"
    )
    with pytest.raises(TableError, match=r"exam 'e1': column 'site' differs"):
        read_exam_list(path)


def test_verify_images_finds_a_corrupt_dicom_at_setup(
    exams: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(exams["a"].parent, root)
    table = root / exams["a"].name
    victim = Path(read_exam_list(table).iloc[-1]["paths"][0])
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated file
    kw = dict(image_size=32, batch_size=4, num_workers=2)
    MammographyDataModule(str(table), **kw).setup("fit")  # exists: not decoded by default
    with pytest.raises(ImageDecodeError, match=re.escape(str(victim))):
        MammographyDataModule(str(table), verify_images=True, **kw).setup("fit")


def test_errors_name_the_physical_line_after_blank_lines_and_multi_line_cells(
    tmp_path: Path,
) -> None:
    # header line 1, L-CC line 2, blank line 3, R-CC lines 4-5 (a quoted path with a line
    # break), the bad laterality on line 6
    path = tmp_path / "exams.csv"
    path.write_text(
        HEADER + "\n" + FOUR[0] + '\n\ne1,p1,R,CC,"b\n.dcm",,40,B\ne1,p1,X,MLO,c.dcm,,40,B\n'
    )
    with pytest.raises(TableError) as err:
        read_exam_list(path)
    assert str(err.value) == f"{path}: line 6, column 'laterality': 'X' is not one of ['L', 'R']"
