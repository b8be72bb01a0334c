"""Label smoothing of uncertain CheXpert labels (LSR-Ones / LSR-Zeros, Pham et al. 2021): draws
in their ranges only where the label is uncertain, the same on every read (a resumed run reads
the table again) and in any row order, different for another seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medxfer.datamodules.chest_xray import (
    COMPETITION_LABELS,
    ChestXrayDataModule,
    CXRTable,
    read_chexpert_csv,
    read_mimic_cxr,
    write_synthetic_chexpert,
    write_synthetic_mimic,
)


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_chexpert(
        tmp_path_factory.mktemp("lsr"), n_patients=60, size=16, seed=2, uncertain_rate=0.4
    )


@pytest.mark.parametrize(
    ("policy", "lo", "hi"), [("lsr-ones", 0.55, 0.85), ("lsr-zeros", 0.0, 0.3)]
)
def test_draws_lie_in_their_range_where_the_label_is_uncertain(
    chexpert: Path, policy: str, lo: float, hi: float
) -> None:
    raw = pd.read_csv(chexpert)
    df = read_chexpert_csv(chexpert, uncertainty=policy, lsr_seed=7)  # type: ignore[arg-type]
    uncertain = (raw[list(COMPETITION_LABELS)] == -1.0).to_numpy()
    values = df[list(COMPETITION_LABELS)].to_numpy()
    assert uncertain.sum() > 20
    assert ((values[uncertain] >= lo) & (values[uncertain] < hi)).all()
    assert len(np.unique(values[uncertain])) == uncertain.sum(), "one draw per image and label"
    certain = raw[list(COMPETITION_LABELS)].fillna(0.0).to_numpy()[~uncertain]
    np.testing.assert_array_equal(values[~uncertain], certain)
    spread = (values[uncertain] - lo) / (hi - lo)  # uniform: mean near 0.5
    assert 0.35 < spread.mean() < 0.65


def test_draws_repeat_per_seed_and_row_order(chexpert: Path, tmp_path: Path) -> None:
    first = read_chexpert_csv(chexpert, uncertainty="lsr-ones", lsr_seed=3)
    again = read_chexpert_csv(chexpert, uncertainty="lsr-ones", lsr_seed=3)
    pd.testing.assert_frame_equal(first, again)
    lines = chexpert.read_text().splitlines()
    shuffled = chexpert.parent / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    other_order = read_chexpert_csv(
        shuffled, uncertainty="lsr-ones", lsr_seed=3, root=chexpert.parent.parent
    )
    a = first.set_index("id")[list(COMPETITION_LABELS)]
    pd.testing.assert_frame_equal(
        a, other_order.set_index("id")[list(COMPETITION_LABELS)].loc[a.index]
    )
    other_seed = read_chexpert_csv(chexpert, uncertainty="lsr-ones", lsr_seed=4)
    assert not np.array_equal(first[list(COMPETITION_LABELS)], other_seed[list(COMPETITION_LABELS)])


def test_mimic_draws_per_study_and_the_datamodule_seed(tmp_path: Path, chexpert: Path) -> None:
    meta = write_synthetic_mimic(tmp_path, 30, size=16, seed=4)
    df = read_mimic_cxr(meta, uncertainty="lsr-zeros", lsr_seed=1)
    per_study = df.groupby("study_id")[list(COMPETITION_LABELS)].nunique()
    assert (per_study.to_numpy() == 1).all(), "the images of a study share its draws"
    dm = ChestXrayDataModule(
        CXRTable(csv=str(chexpert)), uncertainty="lsr-ones", seed=3, image_size=16, num_workers=0
    )
    parts = dm.prepare_tables()
    want = read_chexpert_csv(chexpert, uncertainty="lsr-ones", lsr_seed=3, frontal_only=True)
    got = parts["train"].set_index("id")[list(COMPETITION_LABELS)]
    pd.testing.assert_frame_equal(
        got, want.set_index("id")[list(COMPETITION_LABELS)].loc[got.index]
    )
    assert (
        parts["val"][list(COMPETITION_LABELS)]
        .isin([0.0, 1.0])
        .to_numpy()[parts["val"][list(COMPETITION_LABELS)].notna().to_numpy()]
        .all()
    ), "evaluation reads uncertain labels by eval_uncertainty (masked)"


def test_a_resumed_run_gets_the_draws_it_started_with(chexpert: Path) -> None:
    """``medxfer fit --resume`` rebuilds the datamodule from the run's saved config: the same
    arguments give the same smoothed training targets, another seed other ones."""

    def train_targets(**kw: object) -> np.ndarray:
        dm = ChestXrayDataModule(
            CXRTable(csv=str(chexpert)), uncertainty="lsr-zeros", image_size=16, num_workers=0, **kw
        )
        dm.setup("fit")
        return dm.train_set.targets.numpy()

    started = train_targets(seed=11)
    smoothed = (started > 0) & (started < 0.3)
    assert smoothed.sum() > 10, "uncertain labels drawn from U(0, 0.3)"
    np.testing.assert_array_equal(train_targets(seed=11), started)
    assert not np.array_equal(train_targets(seed=12)[smoothed], started[smoothed])
