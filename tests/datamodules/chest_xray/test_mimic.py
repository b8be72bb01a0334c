"""MIMIC-CXR-JPG: the reader on a synthetic copy of the release's layout, checked against an
independent pandas join of the same gzip tables; its errors name the file, line and column."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medxfer.data.tables import TableError
from medxfer.datamodules.chest_xray import (
    COMPETITION_LABELS,
    ChestXrayDataModule,
    CXRTable,
    read_mimic_cxr,
    write_synthetic_mimic,
)


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-patient MIMIC-CXR-JPG copy; returns its metadata table."""
    return write_synthetic_mimic(tmp_path_factory.mktemp("mimic"), 40, size=32, seed=3)


def copy_release(mimic: Path, to: Path, edit: dict[str, pd.DataFrame] | None = None) -> Path:
    """The release's tables copied to ``to`` (images stay where they are: ``root`` points at
    them), with ``edit`` replacing whole tables; returns the metadata path."""
    to.mkdir(parents=True, exist_ok=True)
    for kind in ("metadata", "chexpert", "negbio", "split"):
        name = f"mimic-cxr-2.0.0-{kind}.csv.gz"
        frame = (edit or {}).get(kind)
        if frame is None:
            (to / name).write_bytes((mimic.parent / name).read_bytes())
        else:
            with gzip.open(to / name, "wt", newline="") as f:
                frame.to_csv(f, index=False)
    return to / "mimic-cxr-2.0.0-metadata.csv.gz"


def table(mimic: Path, kind: str) -> pd.DataFrame:
    return pd.read_csv(mimic.parent / f"mimic-cxr-2.0.0-{kind}.csv.gz", dtype={"dicom_id": str})


def test_label_counts_views_and_split_equal_an_independent_pandas_join(mimic: Path) -> None:
    meta, labels, split = table(mimic, "metadata"), table(mimic, "chexpert"), table(mimic, "split")
    joined = meta.merge(labels, on=["subject_id", "study_id"], how="inner").merge(
        split[["dicom_id", "split"]], on="dicom_id"
    )
    frontal = joined[~joined["ViewPosition"].isin(["LATERAL", "LL"])]
    expected = frontal[frontal["split"] == "train"]
    df = read_mimic_cxr(mimic, split="train", frontal_only=True)  # U-Ones, blank negative
    assert sorted(df["id"]) == sorted(expected["dicom_id"])
    for lab in COMPETITION_LABELS:
        positives = int(expected[lab].isin([1.0, -1.0]).sum())
        assert int(df[lab].sum()) == positives, lab
        assert df[lab].notna().all()
    assert set(df["view"]) <= {"PA", "AP", "Other", "Unknown"}
    unknown = expected.loc[expected["ViewPosition"].isna(), "dicom_id"]
    assert set(df.loc[df["view"] == "Unknown", "id"]) == set(unknown)
    assert (df["split"] == "train").all()
    assert all(Path(p).is_file() for p in df["path"])
    row = meta.set_index("dicom_id").loc[df["id"].iloc[0]]
    assert (
        df["path"]
        .iloc[0]
        .endswith(
            f"files/p{str(row.subject_id)[:2]}/p{row.subject_id}/s{row.study_id}/{df['id'].iloc[0]}.jpg"
        )
    )


def test_unlabelled_studies_are_dropped_and_counted_or_refused(
    mimic: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meta, labels = table(mimic, "metadata"), table(mimic, "chexpert")
    keys = set(zip(labels["subject_id"], labels["study_id"], strict=True))
    unlabelled = [
        k for k, r in meta.iterrows() if (r.subject_id, r.study_id) not in keys
    ]  # fmt: skip
    assert unlabelled, "the synthetic release has studies without a label row"
    df = read_mimic_cxr(mimic)
    assert len(df) == len(meta) - len(unlabelled)
    assert f"dropped {len(unlabelled)} image(s)" in caplog.text
    with pytest.raises(TableError, match=rf"line {unlabelled[0] + 2}: study .* has no row in"):
        read_mimic_cxr(mimic, unlabelled="error")


def test_uncertainty_policies_and_the_negbio_table(mimic: Path) -> None:
    negbio = table(mimic, "negbio")
    ignore = read_mimic_cxr(mimic, labeler="negbio", uncertainty="ignore")
    keyed = ignore.merge(
        negbio.rename(columns={lab: f"{lab}_nb" for lab in COMPETITION_LABELS}),
        left_on=[ignore["patient_id"].str.slice(5).astype(int), "study_id"],
        right_on=["subject_id", "study_id"],
    )
    for lab in COMPETITION_LABELS:
        raw = keyed[f"{lab}_nb"].to_numpy()
        want = np.where(raw == -1.0, np.nan, np.nan_to_num(raw, nan=0.0))
        np.testing.assert_array_equal(keyed[lab].to_numpy(), want)


def test_demographics_from_mimic_iv_patients(mimic: Path) -> None:
    patients = pd.read_csv(mimic.parent / "patients.csv.gz").set_index("subject_id")
    meta = table(mimic, "metadata").set_index("dicom_id")
    df = read_mimic_cxr(mimic, patients=mimic.parent / "patients.csv.gz")
    for _, r in df.head(20).iterrows():
        subject = int(r["patient_id"][5:])
        year = int(str(meta.loc[r["id"], "StudyDate"])[:4])
        p = patients.loc[subject]
        assert r["age"] == p.anchor_age + year - p.anchor_year
        assert r["sex"] == {"F": "Female", "M": "Male"}[p.gender]
    assert (read_mimic_cxr(mimic)["sex"] == "Unknown").all()


def test_bad_label_value_names_the_physical_line(mimic: Path, tmp_path: Path) -> None:
    labels = table(mimic, "chexpert")
    labels.loc[3, "Edema"] = 2.0
    meta = copy_release(mimic, tmp_path, {"chexpert": labels})
    with pytest.raises(TableError, match=r"chexpert.csv.gz: line 5, column 'Edema': value '2.0'"):
        read_mimic_cxr(meta, root=mimic.parent)


def test_a_patient_in_two_official_splits_is_an_error(mimic: Path, tmp_path: Path) -> None:
    split = table(mimic, "split")
    subject = split["subject_id"].iloc[0]
    rows = np.flatnonzero(split["subject_id"] == subject)
    other = "test" if split.loc[rows[0], "split"] != "test" else "train"
    if len(rows) == 1:  # give the patient a second image row in another split
        split = pd.concat([split, split.iloc[[rows[0]]].assign(dicom_id="x")], ignore_index=True)
        rows = np.flatnonzero(split["subject_id"] == subject)
    split.loc[rows[-1], "split"] = other
    meta = copy_release(mimic, tmp_path, {"split": split})
    with pytest.raises(TableError, match=rf"patient {subject} is in splits .* \(lines 2"):
        read_mimic_cxr(meta, split="train", root=mimic.parent)


def test_an_image_absent_from_the_split_file_names_its_metadata_line(
    mimic: Path, tmp_path: Path
) -> None:
    split = table(mimic, "split")
    meta_rows = table(mimic, "metadata")
    gone = meta_rows["dicom_id"].iloc[6]
    meta = copy_release(mimic, tmp_path, {"split": split[split["dicom_id"] != gone]})
    with pytest.raises(TableError, match=rf"line 8, column 'dicom_id': image '{gone}' is not in"):
        read_mimic_cxr(meta, split="test", root=mimic.parent)


def test_missing_tables_and_columns_are_named(mimic: Path, tmp_path: Path) -> None:
    meta = table(mimic, "metadata").drop(columns=["ViewPosition"])
    path = copy_release(mimic, tmp_path / "a", {"metadata": meta})
    with pytest.raises(TableError, match="ViewPosition"):
        read_mimic_cxr(path)
    (tmp_path / "b").mkdir()
    alone = tmp_path / "b" / "mimic-cxr-2.0.0-metadata.csv.gz"
    alone.write_bytes(mimic.read_bytes())
    with pytest.raises(
        FileNotFoundError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv\.gz: no such file"
    ):
        read_mimic_cxr(alone)


def test_official_splits_through_the_datamodule(mimic: Path) -> None:
    def part(split: str) -> CXRTable:
        return CXRTable(csv=str(mimic), format="mimic", official_split=split)  # type: ignore[arg-type]

    dm = ChestXrayDataModule(
        part("train"),
        val=part("validate"),
        test=part("test"),
        split=(1.0, 0.0, 0.0),
        name="mimic",
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (4, len(COMPETITION_LABELS))
