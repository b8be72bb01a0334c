"""Shared fixtures: tiny synthetic chest X-ray data in the real formats, the real NIH subset
(skipped when ../shared/data is absent), and a tiny CPU trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih

REPO = Path(__file__).resolve().parents[1]
NIH_SUBSET = REPO.parent / "shared" / "data" / "nih-chestxray14-subset"


@pytest.fixture(scope="session")
def synthetic_cxr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small CheXpert- and NIH-layout folders (40 px images)."""
    root = tmp_path_factory.mktemp("synthetic_cxr")
    return {
        "root": root,
        "chexpert": write_synthetic_chexpert(root / "chexpert", n_patients=60, size=40, seed=0),
        "nih": write_synthetic_nih(root / "nih", n_patients=20, size=40, seed=1),
    }


@pytest.fixture(scope="session")
def nih_subset() -> Path:
    """The real NIH ChestX-ray14 subset in ../shared/data."""
    csv = NIH_SUBSET / "Data_Entry_2017_v2020.csv"
    if not csv.is_file():
        pytest.skip(f"real NIH subset not found at {NIH_SUBSET} (see ../shared/data/README.md)")
    return csv


@pytest.fixture
def tiny_trainer(tmp_path: Path):
    """A factory of CPU trainers that run a few steps, log nothing and write under tmp_path."""

    def make(**kw) -> L.Trainer:
        opts = dict(
            accelerator="cpu",
            devices=1,
            max_steps=3,
            limit_val_batches=2,
            limit_test_batches=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        opts.update(kw)
        return L.Trainer(**opts)

    return make
