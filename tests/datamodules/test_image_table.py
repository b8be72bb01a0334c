"""The generic table datamodule: every target encoding against hand-computed targets, the
image-folder layout, bad input naming file / line / column, and whole fits from YAML alone."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medxfer.data import ImageDecodeError, TableError
from medxfer.datamodules.image_table import TABLE_CLASSES, ImageTable, write_synthetic_table

CLASSES = tuple(sorted(TABLE_CLASSES))


def _image(path: Path, k: int, rng: np.random.Generator, color: bool = True) -> None:
    """A 40 px image whose dominant channel (or brightness) gives its class away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (rng.random((40, 40, 3)) * 80).astype(np.uint8)
    img[:, :, k] += 150
    Image.fromarray(img if color else img[:, :, k]).save(path)


def _write_table(root: Path, name: str, rows: list[dict[str, str]]) -> Path:
    path = root / f"{name}.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def covid(tmp_path: Path) -> dict[str, Path]:
    """A table in the layout of a public COVID chest X-ray collection (``patientid, sex, age,
    finding, view, filename``, colour images) and a shifted site's table beside it."""
    return {
        "train": write_synthetic_table(tmp_path / "a", n_patients=40, size=40, seed=0),
        "shift": write_synthetic_table(
            tmp_path / "b", n_patients=12, size=40, seed=1, shifted=True
        ),
    }


def _dm(train: Path, **kw) -> ImageTable:
    args = dict(
        target="class",
        target_column="finding",
        image_column="filename",
        patient_column="patientid",
        image_size=32,
        resize=32,
        num_workers=0,
        batch_size=8,
    )
    args.update(kw)
    return ImageTable(str(train), **args)


def test_class_column_gives_one_hot_targets_and_labels_from_train(covid) -> None:
    dm = _dm(covid["train"], group_columns={"sex": "sex"}, age_column="age", age_bins=[40, 60])
    dm.setup("fit")
    assert dm.label_names == sorted(CLASSES)
    assert dm.output_type == "multiclass" and dm.num_classes == 3
    table = dm.prepare_tables()["train"]
    expected = np.array([[c == n for n in sorted(CLASSES)] for c in table["target_class"]], float)
    np.testing.assert_array_equal(dm.train_set.targets.numpy(), expected)
    sample = dm.train_set[0]
    assert sample["image"].shape == (3, 32, 32)
    assert set(sample["groups"]) == {"sex", "age"}
    ages = table["age"].astype(float)
    assert sample["groups"]["age"] == (
        "<40" if ages.iloc[0] < 40 else "40-59" if ages.iloc[0] < 60 else "60+"
    )
    parts = dm.prepare_tables()
    patients = [set(parts[p]["patient_id"]) for p in ("train", "val", "test")]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2])


@pytest.mark.parametrize(
    ("cells", "uncertain", "blank", "expected"),
    [
        pytest.param(["1", "0", "-1", ""], "ignore", "ignore", [1, 0, np.nan, np.nan], id="masked"),
        pytest.param(["1", "0", "-1", ""], "ones", "zeros", [1, 0, 1, 0], id="u-ones"),
        pytest.param(["1.0", "0.0", "-1.0", ""], "zeros", "zeros", [1, 0, 0, 0], id="u-zeros"),
    ],
)
def test_binary_columns_follow_the_uncertainty_policies(
    tmp_path: Path, cells, uncertain, blank, expected
) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        _image(tmp_path / f"{i}.png", i % 3, rng)
        rows.append({"path": f"{i}.png", "A": cells[i], "B": "1"})
    csv_path = _write_table(tmp_path, "t", rows)
    dm = ImageTable(
        str(csv_path), target="binary", labels=["A", "B"], uncertain=uncertain, blank=blank
    )
    table = dm.read_table(str(csv_path))
    got = dm.targets(table, "t")
    np.testing.assert_array_equal(got[:, 0], np.array(expected, np.float32))
    assert dm.output_type == "multilabel"


def test_findings_and_soft_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i, (f, s) in enumerate(
        [("A|B", "A:0.6|B:0.4"), ("No Finding", "{'C': 1.0}"), ("C", "B"), ("B|C", "A:0.5|C:0.5")]
    ):
        _image(tmp_path / f"{i}.png", i % 3, rng)
        rows.append({"path": f"{i}.png", "f": f, "s": s})
    csv_path = _write_table(tmp_path, "t", rows)
    dm = ImageTable(str(csv_path), target="findings", target_column="f", no_finding="No Finding")
    table = dm.read_table(str(csv_path))
    assert dm.fit_labels(table) == ["A", "B", "C"]
    dm._labels = ["A", "B", "C"]
    want = [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]]
    np.testing.assert_array_equal(dm.targets(table, "t"), np.array(want, np.float32))
    soft = ImageTable(str(csv_path), target="soft", target_column="s")
    table = soft.read_table(str(csv_path))
    soft._labels = soft.fit_labels(table)
    want = [[0.6, 0.4, 0], [0, 0, 1], [0, 1, 0], [0.5, 0, 0.5]]
    np.testing.assert_allclose(soft.targets(table, "t"), np.array(want, np.float32), rtol=1e-6)


def test_image_folder_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASSES):
        for i in range(10):
            _image(tmp_path / "tree" / c / f"{i}.jpg", k, rng)
    (tmp_path / "tree" / "covid" / "notes.txt").write_text("not an image")
    dm = ImageTable(str(tmp_path / "tree"), image_size=32, resize=32, num_workers=0)
    dm.setup("fit")
    assert dm.label_names == sorted(CLASSES)
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_sets["data"])
    assert total == 30


def test_split_column_and_patient_in_two_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        _image(tmp_path / f"{i}.png", i % 3, rng)
        split = "train" if i < 6 else "valid" if i < 9 else "test"
        rows.append({"path": f"{i}.png", "c": CLASSES[i % 3], "p": f"p{i}", "split": split})
    good = _write_table(tmp_path, "good", rows)
    dm = ImageTable(
        str(good),
        target_column="c",
        patient_column="p",
        split_column="split",
        num_workers=0,
        image_size=32,
    )
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_sets["data"])) == (6, 3, 3)
    rows[10]["p"] = "p0"  # a test row of a training patient
    leak = _write_table(tmp_path, "leak", rows)
    dm = ImageTable(str(leak), target_column="c", patient_column="p", split_column="split")
    with pytest.raises(
        ValueError,
        match=r"patient 'p0' is in both the train and the test split \(line 12 of .*leak.csv\)",
    ):
        dm.setup("fit")
    rows[10]["split"] = "holdout"
    bad = _write_table(tmp_path, "bad", rows)
    dm = ImageTable(str(bad), target_column="c", patient_column="p", split_column="split")
    with pytest.raises(
        TableError, match=r"bad.csv, line 12, column 'split': split value 'holdout'"
    ):
        dm.setup("fit")
    rows = [r for r in rows if r["split"] != "test"]
    rows[-1]["split"] = "train"
    empty = _write_table(tmp_path, "empty", rows)
    dm = ImageTable(str(empty), target_column="c", patient_column="p", split_column="split")
    with pytest.raises(
        ValueError,
        match=r"test split of .*empty.csv: the split is empty \(after reading and the split column 'split'\)",
    ):
        dm.setup("fit")


def test_bad_input_names_file_line_and_column(covid, tmp_path: Path) -> None:
    with pytest.raises(
        TableError, match=r"metadata.csv: missing required column\(s\) \['diagnosis'\]"
    ):
        _dm(covid["train"], target_column="diagnosis").setup("fit")
    rows = list(csv.DictReader(open(covid["train"])))
    rows[4]["finding"] = ""
    with pytest.raises(TableError, match=r"blank.csv, line 6, column 'finding': no class"):
        _dm(_write_table(covid["train"].parent, "blank", rows)).setup("fit")
    shifted = list(csv.DictReader(open(covid["shift"])))
    shifted[2]["finding"] = "tuberculosis"
    unknown = _write_table(covid["shift"].parent, "unknown", shifted)
    with pytest.raises(
        TableError, match=r"unknown.csv, line 4, column 'finding': .*'tuberculosis' is not in"
    ):
        _dm(covid["train"], shifted={"b": str(unknown)}).setup("fit")
    dm = _dm(covid["train"], shifted={"b": str(unknown)}, other="normal")
    dm.setup("fit")
    assert dm.test_sets["b"].targets[2].tolist() == [0.0, 1.0, 0.0]  # mapped to "normal"
    assert sum(dm._other_counts.values()) == 1
    rows = list(csv.DictReader(open(covid["train"])))
    rows[7]["filename"] = "images/missing.png"
    with pytest.raises(
        ImageDecodeError, match=r"image not found: .*missing.png \(line 9 of .*missing.csv\)"
    ):
        _dm(
            _write_table(covid["train"].parent, "missing", rows),
            split=(0.5, 0.5, 0.0),
            test=str(covid["shift"]),
        ).setup("fit")


def test_parquet_table_reads_like_its_csv(covid) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    pq = covid["train"].with_suffix(".parquet")
    pd.read_csv(covid["train"], dtype=str).to_parquet(pq)
    a, b = _dm(covid["train"]), _dm(pq)
    ta, tb = a.read_table(str(covid["train"])), b.read_table(str(pq))
    assert ta["path"].tolist() == tb["path"].tolist()
    assert ta["target_class"].tolist() == tb["target_class"].tolist()


def _fit(cfg: dict, cwd: Path) -> Path:
    """``medxfer fit -c`` of ``cfg`` in a subprocess in ``cwd`` (its own run folder)."""
    (cwd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "medxfer", "fit", "-c", "cfg.yaml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return next((cwd / "runs").glob("**/results.md"))


TRAINER = {
    "max_steps": 6,
    "limit_val_batches": 1,
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "default_root_dir": "runs",
}


def test_fit_from_yaml_on_a_class_table_with_groups_and_a_shifted_table(covid) -> None:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            **TRAINER,
            "callbacks": [
                {
                    "class_path": "medxfer.callbacks.SubgroupCallback",
                    "init_args": {"attributes": ["sex"], "min_size": 2},
                },
                {"class_path": "medxfer.callbacks.PredictionWriter"},
            ],
        },
        "model": {"class_path": "CaseClassifier", "init_args": {"backbone": "timm/resnet18"}},
        "data": {
            "class_path": "ImageTable",
            "init_args": {
                "train": "a/metadata.csv",
                "shifted": {"site_b": "b/metadata.csv"},
                "target": "class",
                "target_column": "finding",
                "image_column": "filename",
                "patient_column": "patientid",
                "group_columns": {"sex": "sex"},
                "image_size": 32,
                "batch_size": 8,
                "num_workers": 0,
            },
        },
    }
    results = _fit(cfg, covid["train"].parents[1])
    text = results.read_text()
    for c in CLASSES:
        assert f"auroc/{c}" in text
    assert "| site_b |" in text and "| sex |" in text
    saved = yaml.safe_load((results.parent / "config.yaml").read_text())
    assert saved["model"]["init_args"]["input_norm"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    values = json.loads((results.parent / "results.json").read_text())
    assert "test/site_b/auroc_mean" in values
    # results.md's per-group rows: size and top-1 accuracy of each sex in each test set, against
    # NumPy on the per-case predictions of the same run (a group under min_size: "too small")
    lines = text.splitlines()
    header = lines.index("| set | attribute | group | n | accuracy |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2 :]]
    table = {(name, group): (int(n), value) for name, attr, group, n, value in rows}
    assert {attr for _, attr, *_ in rows} == {"sex"}
    expected = {}
    files = sorted((results.parent / "analysis").glob("predictions_*.npz"))
    assert len(files) == 2 and "predictions_site_b.npz" in {f.name for f in files}
    for path in files:
        name, pred = path.stem.removeprefix("predictions_"), np.load(path)
        right = pred["probs"].argmax(1) == pred["target"].argmax(1)
        for g in sorted(set(pred["group_sex"])):
            rows_g = pred["group_sex"] == g
            n = int(rows_g.sum())
            expected[name, g] = (n, f"{right[rows_g].mean():.4f}" if n >= 2 else "too small")
    assert table == expected


def test_fit_from_yaml_on_an_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASSES):
        for i in range(12):
            _image(tmp_path / "tree" / c / f"{i}.png", k, rng, color=False)
    cfg = {
        "seed_everything": 0,
        "trainer": TRAINER,
        "model": {"class_path": "CaseClassifier", "init_args": {"backbone": "timm/resnet18"}},
        "data": {
            "class_path": "ImageTable",
            "init_args": {
                "train": "tree",
                "color": False,
                "split": [0.5, 0.25, 0.25],  # 18 / 9 / 9 images
                "image_size": 32,
                "batch_size": 6,
                "num_workers": 0,
            },
        },
    }
    text = _fit(cfg, tmp_path).read_text()
    for c in CLASSES:
        assert f"auroc/{c}" in text


def test_task_of_the_wrong_output_type_is_refused(covid) -> None:
    cfg = {
        "trainer": TRAINER,
        "model": {"class_path": "MultiLabelClassifier", "init_args": {"backbone": "timm/resnet18"}},
        "data": {
            "class_path": "ImageTable",
            "init_args": {
                "train": "a/metadata.csv",
                "target_column": "finding",
                "image_column": "filename",
            },
        },
    }
    cwd = covid["train"].parents[1]
    (cwd / "wrong.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "medxfer", "fit", "-c", "wrong.yaml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "the data are multiclass but MultiLabelClassifier is multilabel" in out.stderr


def test_cache_and_shots_per_class_work_on_a_user_table(covid, tmp_path: Path) -> None:
    kw = dict(augment=False, shifted={"b": str(covid["shift"])}, resize=36)
    files = _dm(covid["train"], **kw)
    files.build_cache(tmp_path / "cache.h5", workers=0, progress=False)
    cached = _dm(covid["train"], cache=str(tmp_path / "cache.h5"), **kw)
    files.setup("fit")
    cached.setup("fit")
    for name in ("data", "b"):
        a, b = files.test_sets[name], cached.test_sets[name]
        assert a.ids == b.ids
        for i in range(len(a)):  # 8-bit storage, rounded as the transform rounds the files
            assert a[i]["image"].dtype == torch.uint8
            assert torch.equal(a[i]["image"], b[i]["image"])
    few = _dm(covid["train"], shots_per_class=2)
    few.setup("fit")
    counts = few.train_set.targets.sum(0).tolist()
    assert counts == [2.0, 2.0, 2.0]


def _table(tmp_path: Path, rows: list[dict[str, str]], name: str = "t") -> Path:
    rng = np.random.default_rng(0)
    for row in rows:
        if row.get("path") and not row["path"].startswith("missing"):
            _image(tmp_path / row["path"], 0, rng)
    return _write_table(tmp_path, name, rows)


@pytest.mark.parametrize(
    ("rows", "kw", "error", "message"),
    [
        pytest.param(
            [{"path": "0.png", "A": "1"}, {"path": "1.png", "A": "yes"}],
            {"target": "binary", "labels": ["A"]},
            TableError,
            r"t.csv, line 3, column 'A': label value 'yes'; expected 1, 0, -1 or blank",
            id="binary-cell",
        ),
        pytest.param(
            [{"path": "0.png", "s": "A:0.6|B:0.6"}],
            {"target": "soft", "target_column": "s"},
            TableError,
            r"t.csv, line 2, column 's': differential weights sum to 1.2000",
            id="soft-sum",
        ),
        pytest.param(
            [{"path": "0.png", "s": "A:x"}],
            {"target": "soft", "target_column": "s"},
            TableError,
            r"t.csv, line 2, column 's': differential 'A:x' does not parse",
            id="soft-parse",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a", "age": "old"}],
            {"target_column": "c", "age_column": "age"},
            TableError,
            r"t.csv, line 2, column 'age': age 'old' is not a number",
            id="age-text",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a", "age": "40"}, {"path": "1.png", "c": "a", "age": "-3"}],
            {"target_column": "c", "age_column": "age"},
            TableError,
            r"t.csv, line 3, column 'age': age -3 is outside \[0, 120\] years",
            id="age-negative",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a", "age": "412"}],
            {"target_column": "c", "age_column": "age"},
            TableError,
            r"t.csv, line 2, column 'age': age 412 is outside \[0, 120\] years",
            id="age-too-old",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a", "sex": "F"}, {"path": "1.png", "c": "a", "sex": "X"}],
            {"target_column": "c", "sex_column": "sex"},
            TableError,
            r"t.csv, line 3, column 'sex': sex 'X' is not one of F, M, Female, Male",
            id="sex-unknown-value",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a"}, {"path": "1.png", "c": "b"}, {"path": "0.png", "c": "a"}],
            {"target_column": "c"},
            TableError,
            r"t.csv: lines 2, 4 hold the same case \(path='0.png'\); remove the copies, or set "
            r"drop_duplicates: true",
            id="duplicate-row",
        ),
        pytest.param(
            [{"path": "0.png", "c": "a"}, {"path": "0.png", "c": "b"}],
            {"target_column": "c", "drop_duplicates": True},
            TableError,
            r"t.csv: lines 2, 3 hold the same case \(path='0.png'\); the copies differ",
            id="duplicate-conflicting",
        ),
        pytest.param(
            [{"path": "0.png", "c": "Eczema"}, {"path": "1.png", "c": "Eczma"}],
            {"target_column": "c", "labels": ["Eczema", "Psoriasis"]},
            TableError,
            r"t.csv, line 3, column 'c': class 'Eczma' is not in the declared labels "
            r"\['Eczema', 'Psoriasis'\]; did you mean 'Eczema'\?",
            id="class-near-miss",
        ),
        pytest.param(
            [{"path": "0.png", "c": "Eczema:0.5|Psoriassis:0.5"}],
            {"target": "soft", "target_column": "c", "labels": ["Eczema", "Psoriasis"]},
            TableError,
            r"t.csv, line 2, column 'c': class 'Psoriassis' is not in the declared labels "
            r"\['Eczema', 'Psoriasis'\]; did you mean 'Psoriasis'\?",
            id="soft-near-miss",
        ),
        pytest.param(
            [{"path": "", "c": "a"}],
            {"target_column": "c"},
            TableError,
            r"t.csv, line 2, column 'path': no image path",
            id="no-image-path",
        ),
    ],
)
def test_more_bad_cells_name_file_line_and_column(
    tmp_path: Path, rows, kw, error: type, message: str
) -> None:
    table = _table(tmp_path, rows)
    dm = ImageTable(str(table), **kw)
    with pytest.raises(error, match=message):
        dm.read_table(str(table))


def test_sex_spellings_age_bins_and_dropped_duplicates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {"path": "0.png", "c": "a", "sex": "F", "age": "0"},
        {"path": "1.png", "c": "a", "sex": "male", "age": "39.5"},
        {"path": "2.png", "c": "b", "sex": "Female", "age": ""},
        {"path": "3.png", "c": "b", "sex": "X", "age": "120"},
        {"path": "1.png", "c": "a", "sex": "male", "age": "39.5"},  # line 3 again
    ]
    table = _table(tmp_path, rows)
    kw = {"target_column": "c", "sex_column": "sex", "age_column": "age", "age_bins": [40]}
    dm = ImageTable(str(table), drop_duplicates=True, unknown_sex=True, **kw)
    assert dm.group_columns() == {"sex": "group:sex", "age": "group:age"}  # in every batch
    with caplog.at_level(logging.WARNING):
        df = dm.read_table(str(table))
    assert df["line"].tolist() == [2, 3, 4, 5]
    assert df["group:sex"].tolist() == ["Female", "Male", "Female", "Unknown"]
    assert df["group:age"].tolist() == ["<40", "<40", "unknown", "40+"]
    assert "dropped 1 repeated row(s)" in caplog.text
    assert "{'X': 1}" in caplog.text
    with pytest.raises(ValueError, match="sex_column makes the 'sex' group"):
        ImageTable(str(table), group_columns={"sex": "sex"}, **kw)


def test_undeclared_label_of_an_evaluation_table_suggests_the_closest(tmp_path: Path) -> None:
    train = _table(tmp_path, [{"path": "0.png", "c": "Eczema"}, {"path": "1.png", "c": "Acne"}])
    test = _table(tmp_path, [{"path": "2.png", "c": "Ecsema"}], name="u")
    dm = ImageTable(str(train), target_column="c")
    dm._labels = dm.fit_labels(dm.read_table(str(train)))
    with pytest.raises(
        TableError,
        match=r"u.csv, line 2, column 'c': test: label 'Ecsema' is not "
        r"in the training split's labels \['Acne', 'Eczema'\]; did you mean "
        r"'Eczema'\?",
    ):
        dm.targets(dm.read_table(str(test), evaluation=True), "test")


def test_bad_folders_and_tables(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(TableError, match=r"empty: no images in class folders"):
        ImageTable(str(tmp_path / "empty")).read_table(str(tmp_path / "empty"))
    _image(tmp_path / "tree" / "a" / "0.png", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"image folder, which has no columns: remove age_column"):
        ImageTable(str(tmp_path / "tree"), age_column="age").read_table(str(tmp_path / "tree"))
    with pytest.raises(ValueError, match=r"image folder, which holds classes: set target: class"):
        ImageTable(str(tmp_path / "tree"), target="findings").read_table(str(tmp_path / "tree"))
    header_only = tmp_path / "h.csv"
    header_only.write_text("path,c\n")
    with pytest.raises(TableError, match=r"h.csv: the table has no rows"):
        ImageTable(str(header_only), target_column="c").read_table(str(header_only))
    with pytest.raises(FileNotFoundError, match=r"data: training table not found: .*nothere.csv"):
        ImageTable(str(tmp_path / "nothere.csv"), target_column="c").setup("fit")


def test_parquet_errors_name_the_row(covid, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    frame = pd.read_csv(covid["train"], dtype=str)
    frame.loc[3, "finding"] = ""
    pq = covid["train"].with_name("blank.parquet")
    frame.to_parquet(pq)
    with pytest.raises(TableError, match=r"blank.parquet, line 4, column 'finding': no class"):
        _dm(pq).read_table(str(pq))


def test_undecodable_image_is_named_or_skipped_and_counted(covid, caplog) -> None:
    rows = list(csv.DictReader(open(covid["train"])))
    broken = covid["train"].parent / rows[5]["filename"]
    broken.write_bytes(b"not a png")
    table = _write_table(covid["train"].parent, "broken", rows)
    with pytest.raises(
        ImageDecodeError, match=r"could not decode image .*\(line 7 of .*broken.csv\)"
    ):
        _dm(table, verify_images=True, split=(0.8, 0.0, 0.2), val=str(covid["shift"])).setup("fit")
    skipping = _dm(table, skip_bad_images=True, split=(0.8, 0.0, 0.2), val=str(covid["shift"]))
    skipping.setup("fit")
    assert len(skipping.train_set) + len(skipping.test_sets["data"]) == len(rows) - 1
    assert "skipped 1 row(s)" in caplog.text


def test_explicit_tables_of_the_same_name_do_not_collide(tmp_path: Path) -> None:
    """Without a patient column each row is its own patient, across tables too."""
    a = write_synthetic_table(tmp_path / "train", n_patients=20, size=32, seed=0)
    b = write_synthetic_table(tmp_path / "test", n_patients=8, size=32, seed=1)
    dm = ImageTable(
        str(a),
        test=str(b),
        target_column="finding",
        image_column="filename",
        split=(0.8, 0.2, 0.0),
        image_size=32,
        num_workers=0,
    )
    dm.setup("fit")
    assert len(dm.test_sets["data"]) == len(pd_rows(b))


def pd_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path)))


def test_errors_name_the_physical_line_after_a_blank_line(tmp_path: Path) -> None:
    from medxfer.datamodules.image_table.readers import read_image_table

    path = tmp_path / "t.csv"
    path.write_text("path, split\n0.png, train\n\n1.png, holdout\n")  # holdout on line 4
    with pytest.raises(TableError) as err:
        read_image_table(path, ["path"], split_column="split")
    assert str(err.value).startswith(f"{path}, line 4, column 'split': split value 'holdout'")


def test_default_ids_are_the_physical_csv_line(tmp_path: Path) -> None:
    """Ids name the line every error names: after a blank line and a quoted two-line cell too
    (lines counted by hand from the text written)."""
    rng = np.random.default_rng(0)
    for i in range(3):
        _image(tmp_path / f"{i}.png", 0, rng)
    path = tmp_path / "t.csv"
    path.write_text('path,c,note\n0.png,a,x\n\n1.png,b,"two\nlines"\n2.png,a,y\n')
    df = ImageTable(str(path), target_column="c").read_table(str(path))
    assert df["line"].tolist() == [2, 4, 6]
    assert df["id"].tolist() == ["t-2", "t-4", "t-6"]


def test_where_keeps_the_listed_values_and_counts_what_it_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    views = ["PA", "AP", "L", " PA", "AP Supine", "L", "AP"]
    table = _table(
        tmp_path, [{"path": f"{i}.png", "c": "a", "view": v} for i, v in enumerate(views)]
    )
    dm = ImageTable(str(table), target_column="c", where={"view": ["PA", "AP"]})
    with caplog.at_level(logging.INFO):
        df = dm.read_table(str(table))
    # kept by hand: PA (line 2), AP (3), " PA" (5, spaces stripped), AP (8)
    assert df["line"].tolist() == [2, 3, 5, 8]
    assert df["id"].tolist() == ["t-2", "t-3", "t-5", "t-8"]
    assert "where view in ['AP', 'PA']: kept 4 of 7 rows (removed 3)" in caplog.text
    two = ImageTable(str(table), target_column="c", where={"view": ["AP", "L"], "path": ["6.png"]})
    assert two.read_table(str(table))["line"].tolist() == [8]
    with pytest.raises(TableError, match=r"t.csv: where: no column 'site' to filter on"):
        ImageTable(str(table), target_column="c", where={"site": ["a"]}).read_table(str(table))
    with pytest.raises(TableError, match=r"t.csv: no row is left by the filters"):
        ImageTable(str(table), target_column="c", where={"view": ["LL"]}).read_table(str(table))
    with pytest.raises(TableError, match=r"where: 'view' needs a list of values to keep"):
        ImageTable(str(table), target_column="c", where={"view": "PA"}).read_table(str(table))


def _findings(tmp_path: Path, values: list[str], name: str = "f") -> Path:
    return _table(
        tmp_path, [{"path": f"{name}{i}.png", "f": v} for i, v in enumerate(values)], name
    )


def test_other_never_folds_unknown_findings_into_a_real_label(tmp_path: Path) -> None:
    """Issue 25 item 1: Lipoid / Influenza cases must not become COVID-19 positives."""
    from medxfer.errors import ConfigError

    train = _findings(tmp_path, ["COVID-19", "Pneumonia|COVID-19", "Lipoid", "Pneumonia"])
    test = _findings(tmp_path, ["Influenza", "COVID-19"], name="u")
    kw = {"target": "findings", "target_column": "f"}
    with pytest.raises(ConfigError, match=r"other='COVID-19' is one of the declared labels"):
        ImageTable(str(train), labels=["COVID-19", "Pneumonia"], other="COVID-19", **kw)
    with pytest.raises(ConfigError, match=r"other='A': binary targets .* remove other"):
        ImageTable(str(train), target="binary", labels=["A"], other="A")
    folding = ImageTable(str(train), other="COVID-19", **kw)
    with pytest.raises(ConfigError, match=r"other='COVID-19' is a finding of the training split"):
        folding.fit_labels(folding.read_table(str(train)))
    # without other, an unknown finding is an error that does not suggest folding it
    plain = ImageTable(str(train), **kw)
    plain._labels = plain.fit_labels(plain.read_table(str(train)))
    with pytest.raises(
        TableError, match=r"u.csv, line 2, .*finding 'Influenza'.*other: Other"
    ) as e:
        plain.targets(plain.read_table(str(test), evaluation=True), "test")
    assert "<a class>" not in str(e.value)
    # a dedicated label: training findings outside the declared labels train it
    dm = ImageTable(str(train), labels=["COVID-19", "Pneumonia"], other="Other", **kw)
    dm._labels = dm.fit_labels(dm.read_table(str(train)))
    assert dm._labels == ["COVID-19", "Pneumonia", "Other"]
    want_train = [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]]  # by hand from the rows
    np.testing.assert_array_equal(dm.targets(dm.read_table(str(train)), "train"), want_train)
    want_test = [[0, 0, 1], [1, 0, 0]]
    got = dm.targets(dm.read_table(str(test), evaluation=True), "test")
    np.testing.assert_array_equal(got, want_test)


def test_a_label_without_a_training_positive_is_an_error_or_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25 item 3: a label blank in every training row, or a declared class without a
    training case, gets no head silently."""
    from medxfer.errors import ConfigError

    rows = [
        {"path": f"{i}.png", "A": a, "B": "", "C": c}
        for i, (a, c) in enumerate([("1", "0"), ("0", "0"), ("1", "-1"), ("0", "0")])
    ]
    table = _table(tmp_path, rows)
    kw = {"target": "binary", "labels": ["A", "B", "C"]}
    dm = ImageTable(str(table), **kw)
    with pytest.raises(
        ConfigError,
        match=r"label\(s\) 'B' \(0 of 4 rows known\), 'C' \(3 of 4 rows known\) have no positive "
        r"case in the training split \(4 rows\).*drop_empty_labels: true",
    ):
        dm.fit_labels(dm.read_table(str(table)))
    dropping = ImageTable(str(table), drop_empty_labels=True, **kw)
    with caplog.at_level(logging.WARNING):
        assert dropping.fit_labels(dropping.read_table(str(table))) == ["A"]
    assert "dropped 2 label(s) without a positive training case" in caplog.text
    classes = _table(
        tmp_path, [{"path": "0.png", "c": "Acne"}, {"path": "1.png", "c": "Acne"}], "c"
    )
    declared = ImageTable(str(classes), target_column="c", labels=["Acne", "Eczema"])
    with pytest.raises(ConfigError, match=r"label\(s\) 'Eczema' have no positive case"):
        declared.fit_labels(declared.read_table(str(classes)))


def test_class_targets_split_stratified_by_default_so_a_rare_class_trains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25 item 6: 5 rare rows at 0.7 / 0.1 / 0.2 -> 4 / 0 / 1 by hand (see
    tests/data/test_splits.py), whatever the seed; multi-label targets when asked."""
    rows = [
        {"path": f"{i}.png", "c": "rare" if i < 5 else "common", "f": "x|y" if i < 5 else "x"}
        for i in range(50)
    ]
    table = _table(tmp_path, rows)
    for seed in range(3):
        dm = ImageTable(str(table), target_column="c", split_seed=seed, num_workers=0)
        with caplog.at_level(logging.INFO):
            parts = dm.prepare_tables()
        counts = [int((parts[p]["target_class"] == "rare").sum()) for p in ("train", "val", "test")]
        assert counts == [4, 0, 1]
        assert dm.label_names == ["common", "rare"]
    # parts of 35 / 5 / 10 rows (0.7 / 0.1 / 0.2 of 50) less the rare rows: common 31 / 5 / 9
    assert "rows per stratum (train/val/test): common 31/5/9, rare 4/0/1" in caplog.text
    multi = ImageTable(str(table), target="findings", target_column="f", stratify=True)
    parts = multi.prepare_tables()
    assert [sum("y" in s for s in parts[p]["target_set"]) for p in ("train", "val", "test")] == [
        4,
        0,
        1,
    ]


def test_an_other_label_without_training_cases_is_refused(tmp_path: Path) -> None:
    from medxfer.errors import ConfigError

    train = _table(tmp_path, [{"path": f"{i}.png", "c": c} for i, c in enumerate("abab")])
    dm = ImageTable(str(train), target_column="c", other="Other", drop_empty_labels=True)
    with pytest.raises(ConfigError, match=r"other='Other' has no training case to learn from"):
        dm.fit_labels(dm.read_table(str(train)))
    declared = ImageTable(str(train), target_column="c", labels=["a"], other="Other")
    assert declared.fit_labels(declared.read_table(str(train))) == ["a", "Other"]
