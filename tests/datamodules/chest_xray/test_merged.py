"""Merged chest X-ray sources (the scale study's pre-training data): the union / intersection
label space and the loss mask against hand-computed cases, per-source patient splits and test
sets, and per-source sampling weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medxfer.datamodules.chest_xray import (
    ChestXrayDataModule,
    CXRTable,
    write_synthetic_chexpert,
    write_synthetic_mimic,
    write_synthetic_nih,
    write_synthetic_padchest,
)
from medxfer.errors import ConfigError
from medxfer.tasks.single_image import masked_bce_with_logits

#: CheXpert annotates the first three (CheXpert observations), NIH the first two (mapped) and
#: Infiltration (an NIH finding), PadChest all four (its term map).
LABELS = ["Cardiomegaly", "Pleural Effusion", "Fracture", "Infiltration"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CXRTable]:
    root = tmp_path_factory.mktemp("merged")
    chexpert = write_synthetic_chexpert(root / "chexpert", n_patients=30, size=24, seed=0)
    nih = write_synthetic_nih(root / "nih", n_patients=20, size=24, seed=1)
    padchest = write_synthetic_padchest(root / "padchest", 20, size=24, seed=2)
    return {
        "chexpert": CXRTable(csv=str(chexpert)),
        "nih": CXRTable(csv=str(nih), format="nih"),
        "padchest": CXRTable(csv=str(padchest), format="padchest"),
    }


def module(sources: dict[str, CXRTable], **kw: object) -> ChestXrayDataModule:
    return ChestXrayDataModule(
        sources, labels=LABELS, image_size=24, batch_size=4, num_workers=0, **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("space", "chosen"),
    [
        ("given", LABELS),
        ("union", LABELS),
        ("intersection", ["Cardiomegaly", "Pleural Effusion"]),
    ],
)
def test_label_space_over_what_the_sources_annotate(
    sources: dict[str, CXRTable], space: str, chosen: list[str]
) -> None:
    dm = module(sources, label_space=space)
    parts = dm.prepare_tables()
    assert dm.label_names == chosen
    train = parts["train"]
    by_source = {name: train[train["dataset"] == name] for name in sources}
    assert by_source["chexpert"]["Infiltration"].isna().all()  # unknown, never negative
    assert by_source["nih"]["Fracture"].isna().all()
    assert by_source["nih"]["Infiltration"].notna().all()
    assert by_source["padchest"][LABELS].notna().all().all()


def test_two_sources_intersection_and_the_loss_mask_by_hand(sources: dict[str, CXRTable]) -> None:
    dm = module({k: sources[k] for k in ("chexpert", "nih")}, label_space="union")
    train = dm.prepare_tables()["train"]
    assert dm.label_names == LABELS  # union: Fracture from CheXpert, Infiltration from NIH
    rows = train.groupby("dataset").head(2)  # 2 CheXpert rows, 2 NIH rows
    target = torch.tensor(rows[LABELS].to_numpy(dtype=np.float32))
    logits = torch.linspace(-2, 2, target.numel()).reshape(target.shape)
    known = ~torch.isnan(target)
    assert known.sum() == 12  # 4 rows x 4 labels, less 2 Infiltration (CheXpert), 2 Fracture (NIH)
    z, y = logits[known], target[known]
    by_hand = torch.mean(torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs())))
    torch.testing.assert_close(masked_bce_with_logits(logits, target), by_hand)


def test_each_source_is_split_by_patient_and_tested_on_its_own(
    sources: dict[str, CXRTable],
) -> None:
    dm = module(sources, split=(0.6, 0.2, 0.2))
    parts = dm.prepare_tables()
    for name in sources:
        sizes = [int((p["dataset"] == name).sum()) for p in parts.values()]
        total = sum(sizes)
        assert abs(sizes[0] - 0.6 * total) <= 8, (name, sizes)  # within a patient's images
        patients = [set(p.loc[p["dataset"] == name, "patient_id"]) for p in parts.values()]
        assert not (patients[0] & patients[1] or patients[0] & patients[2])
        assert all(pid.startswith(f"{name}:") for pid in patients[0])
    assert dm.eval_names == ["chexpert", "nih", "padchest"]
    dm.setup("test")
    assert list(dm.test_sets) == ["chexpert", "nih", "padchest"]
    assert {len(d) for d in dm.test_sets.values()} == {
        int((parts["test"]["dataset"] == n).sum()) for n in sources
    }


def test_source_weights_sample_each_source_at_its_share(sources: dict[str, CXRTable]) -> None:
    dm = module(
        {k: sources[k] for k in ("chexpert", "nih")}, source_weights={"chexpert": 1.0, "nih": 3.0}
    )
    dm.setup("fit")
    sampler = dm.train_sampler(dm.train_set)
    assert sampler is not None
    sampler.generator = torch.Generator().manual_seed(0)
    drawn = Counter(dm.train_set.groups["dataset"][i] for _ in range(20) for i in sampler)
    share = drawn["nih"] / sum(drawn.values())
    assert 0.72 < share < 0.78, share
    with pytest.raises(ConfigError, match="source_weights"):
        module(sources, source_weights={"mimic": 1.0})


def test_the_evaluation_read_equals_parsing_again_under_the_evaluation_policy(
    sources: dict[str, CXRTable],
) -> None:
    """Validation / test rows of the re-split are derived from the training read (its
    uncertain bits), not parsed again: the same labels as reading with ``eval_uncertainty``."""
    from medxfer.datamodules.chest_xray import read_chexpert_csv

    dm = ChestXrayDataModule(sources["chexpert"], uncertainty="ones", eval_uncertainty="ignore")
    parts = dm.prepare_tables()
    fresh = read_chexpert_csv(sources["chexpert"].csv, uncertainty="ignore", frontal_only=True)
    labels = dm.label_names
    for part in ("val", "test"):
        got = parts[part].set_index("id")[labels]
        want = fresh.set_index("id").loc[got.index, labels]
        assert want.isna().any().any(), "the fixture has uncertain labels in evaluation rows"
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    train = parts["train"].set_index("id")[labels]
    ones = read_chexpert_csv(sources["chexpert"].csv, uncertainty="ones", frontal_only=True)
    np.testing.assert_array_equal(
        train.to_numpy(), ones.set_index("id").loc[train.index, labels].to_numpy()
    )


def test_a_source_with_an_official_split_keeps_it_the_others_are_re_split(
    sources: dict[str, CXRTable], tmp_path: Path
) -> None:
    mimic = write_synthetic_mimic(tmp_path / "mimic", n_patients=30, size=24, seed=3)
    merged = {
        "chexpert": sources["chexpert"],
        "mimic": CXRTable(csv=str(mimic), format="mimic", official_split="all"),
    }
    dm = module(merged, split=(0.6, 0.2, 0.2), frontal_only=False)
    parts = dm.prepare_tables()
    # the release's own split file, read independently
    official = pd.read_csv(mimic.with_name("mimic-cxr-2.0.0-split.csv.gz"))
    by_image = dict(zip(official["dicom_id"], official["split"], strict=True))
    for part, want in zip(parts.values(), ("train", "validate", "test"), strict=True):
        ids = part.loc[part["dataset"] == "mimic", "id"]
        assert len(ids) > 0
        assert {by_image[i] for i in ids} == {want}
    # every image whose study has a label row is kept (unlabelled studies are dropped)
    meta = pd.read_csv(mimic)
    labels = pd.read_csv(mimic.with_name("mimic-cxr-2.0.0-chexpert.csv.gz"))
    labelled = meta.merge(labels[["subject_id", "study_id"]], on=["subject_id", "study_id"])
    kept = sum(int((p["dataset"] == "mimic").sum()) for p in parts.values())
    assert kept == len(labelled)
    chexpert = [int((p["dataset"] == "chexpert").sum()) for p in parts.values()]
    assert abs(chexpert[0] - 0.6 * sum(chexpert)) <= 8  # re-split by fractions
