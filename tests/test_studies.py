"""Study tools: BiT-HyperRule at every boundary, bootstrap intervals (exactness and coverage)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medxfer.hyperrule import bit_hyperrule
from medxfer.metrics import bootstrap_ci, resampled_auroc


@pytest.mark.parametrize(
    ("size", "schedule", "mixup"),
    [
        pytest.param(1, (100, 200, 300, 400, 500), 0.0, id="tiny"),
        pytest.param(19_999, (100, 200, 300, 400, 500), 0.0, id="below-20k"),
        pytest.param(20_000, (500, 3000, 6000, 9000, 10_000), 0.1, id="at-20k"),
        pytest.param(499_999, (500, 3000, 6000, 9000, 10_000), 0.1, id="below-500k"),
        pytest.param(500_000, (500, 6000, 12_000, 18_000, 20_000), 0.1, id="at-500k"),
    ],
)
def test_hyperrule_schedule_and_mixup_by_dataset_size(
    size: int, schedule: tuple, mixup: float
) -> None:
    rule = bit_hyperrule(size, 224)
    assert rule.schedule == schedule and rule.mixup == mixup
    assert (rule.base_lr, rule.batch_size) == (0.003, 512)


@pytest.mark.parametrize(
    ("hw", "resolution"),
    [
        pytest.param((95, 96), (160, 128), id="below-96x96"),
        pytest.param((96, 96), (512, 480), id="at-96x96"),
        pytest.param((32, 32), (160, 128), id="cifar"),
        pytest.param((2048, 2048), (512, 480), id="mammogram"),
    ],
)
def test_hyperrule_resolution_by_area(hw: tuple[int, int], resolution: tuple[int, int]) -> None:
    assert bit_hyperrule(1000, hw).resolution == resolution


@pytest.mark.parametrize(
    ("step", "lr"),
    [
        pytest.param(0, 0.0, id="start"),
        pytest.param(250, 0.0015, id="mid-warmup"),
        pytest.param(500, 0.003, id="warmup-end"),
        pytest.param(3000, 0.003, id="at-first-decay"),
        pytest.param(3001, 0.0003, id="after-first-decay"),
        pytest.param(6001, 0.00003, id="after-second"),
        pytest.param(9001, 0.000003, id="after-third"),
        pytest.param(9999, 0.000003, id="last-step"),
        pytest.param(10_000, None, id="over"),
    ],
)
def test_hyperrule_learning_rate_at_every_boundary(step: int, lr: float | None) -> None:
    got = bit_hyperrule(100_000, 224).lr_at(step)
    assert got == (None if lr is None else pytest.approx(lr))


def test_resampled_auroc_equals_sklearn_on_each_resample() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    s = np.round(rng.normal(y, 1.0), 1)  # rounded: many ties
    idx = rng.integers(0, 200, size=(5, 200))
    got = resampled_auroc(s, y, idx)
    for r in range(5):
        assert got[r] == pytest.approx(roc_auc_score(y[idx[r]], s[idx[r]]), abs=1e-12)
    y_unknown = y.copy()
    y_unknown[:20] = np.nan  # unknown labels are not counted
    got = resampled_auroc(s, y_unknown, idx[:1])[0]
    keep = idx[0][idx[0] >= 20]
    assert got == pytest.approx(roc_auc_score(y[keep], s[keep]), abs=1e-12)


def test_bootstrap_interval_covers_the_true_auroc_about_95_percent() -> None:
    """Binormal scores: positives N(d, 1), negatives N(0, 1) have AUROC Phi(d / sqrt 2)."""
    d, n, trials = 1.0, 300, 200
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(1)
    covered = 0
    for t in range(trials):
        y = (rng.random(n) < 0.4).astype(float)
        s = rng.normal(d * y, 1.0)
        ci = bootstrap_ci(s, y, n_resamples=1000, seed=t)
        covered += ci.low <= truth <= ci.high
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_multilabel_and_accuracy() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((400, 2)) < 0.3).astype(float)
    p = np.clip(y * 0.4 + rng.random((400, 2)) * 0.6, 0, 1)
    y[::5, 1] = np.nan
    ci = bootstrap_ci(p, y)
    known = ~np.isnan(y[:, 1])
    expected = (roc_auc_score(y[:, 0], p[:, 0]) + roc_auc_score(y[known, 1], p[known, 1])) / 2
    assert ci.value == pytest.approx(expected) and ci.low < ci.value < ci.high
    probs = rng.dirichlet(np.ones(3), size=300)
    onehot = np.eye(3)[rng.integers(0, 3, 300)]
    acc = bootstrap_ci(probs, onehot, metric="accuracy")
    assert acc.value == pytest.approx((probs.argmax(1) == onehot.argmax(1)).mean())


def test_fractions_are_nested_and_keep_label_prevalence() -> None:
    from medxfer.data.subsample import multilabel_strata, subsample_mask

    rng = np.random.default_rng(0)
    prevalence = np.array([0.3, 0.1, 0.03])
    y = (rng.random((20_000, 3)) < prevalence).astype(float)
    strata = multilabel_strata(y, ["a", "b", "c"])
    assert set(strata[y[:, 2] == 1]) == {"c"}  # the rarest positive label wins
    masks = {f: subsample_mask(strata, fraction=f, seed=3) for f in (0.05, 0.1, 0.2, 0.5)}
    for small, large in ((0.05, 0.1), (0.1, 0.2), (0.2, 0.5)):
        assert not (masks[small] & ~masks[large]).any()  # nested
    full = y.mean(axis=0)
    for f, m in masks.items():
        assert abs(m.mean() - f) < 0.002
        np.testing.assert_allclose(y[m].mean(axis=0), full, atol=0.02 if f < 0.1 else 0.01)
    other_seed = subsample_mask(strata, fraction=0.1, seed=4)
    assert (other_seed != masks[0.1]).any()


def test_k_shot_counts_are_exact() -> None:
    from medxfer.data.subsample import subsample_mask

    classes = np.array(["eczema"] * 50 + ["acne"] * 20 + ["melanoma"] * 3)
    keep = subsample_mask(classes, shots=5, seed=0)
    kept = classes[keep]
    assert {c: int((kept == c).sum()) for c in ("eczema", "acne", "melanoma")} == {
        "eczema": 5,
        "acne": 5,
        "melanoma": 3,
    }
    with pytest.raises(ValueError, match="exactly one"):
        subsample_mask(classes, fraction=0.5, shots=5)


def test_datamodule_train_fraction(synthetic_cxr) -> None:
    from medxfer.datamodules import ChestXrayDataModule, CXRTable

    sizes, val = {}, {}
    for f in (None, 0.5, 0.25):
        dm = ChestXrayDataModule(
            CXRTable(str(synthetic_cxr["chexpert"])), train_fraction=f, num_workers=0
        )
        dm.setup("fit")
        sizes[f], val[f] = set(dm.train_set.ids), dm.val_set.ids
    assert val[None] == val[0.5] == val[0.25]  # only training is subsampled
    assert sizes[0.25] < sizes[0.5] < sizes[None]
    assert abs(len(sizes[0.5]) / len(sizes[None]) - 0.5) < 0.05


def test_mixup_mixes_images_and_targets_with_one_lambda() -> None:
    import torch

    from medxfer.tasks import mixup_batch

    torch.manual_seed(0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, float("nan")], [0.0, 0.0]])
    out = mixup_batch(
        {
            "image": x,
            "target": t,
            "mask": torch.tensor([[1, 0], [1, 1], [1, 0], [1, 0]], dtype=torch.bool),
        },
        0.4,
    )
    torch.manual_seed(0)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(4)
    torch.testing.assert_close(out["image"], lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(out["target"], lam * t + (1 - lam) * t[perm], equal_nan=True)
    assert torch.isnan(out["target"][(perm == 2).nonzero()[0, 0], 1]) and out["mask"][:, 0].all()


def test_hyperrule_applied_to_a_run(synthetic_cxr) -> None:
    from medxfer.datamodules import ChestXrayDataModule, CXRTable
    from medxfer.hyperrule import apply_hyperrule
    from medxfer.tasks import MultiLabelClassifier

    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=16, num_workers=0
    )
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, optimizer="adam", lr=0.1
    )

    class FakeTrainer:
        class fit_loop:
            max_steps = -1

    trainer = FakeTrainer()
    rule = apply_hyperrule(task, dm, trainer)
    assert rule.schedule == (100, 200, 300, 400, 500) and rule.resolution == (
        160,
        128,
    )  # 40 px images, < 20k cases
    hp = task.hparams
    got = (hp.optimizer, hp.momentum, hp.warmup_steps, hp.decay_at, hp.mixup)
    assert got == ("sgd", 0.9, 100, [200, 300, 400], 0.0)
    assert hp.lr == pytest.approx(0.003 * 16 / 512) and trainer.fit_loop.max_steps == 500
    dm.setup("fit")
    assert dm.train_set[0]["image"].shape[-1] == 128
    for step in (99, 100, 150, 200, 201, 250, 301, 450):  # the task's schedule is the rule's
        expected = rule.lr_at(step + 1 if step < 100 else step) * 16 / 512  # warm-up counts from 1
        assert task.lr_factor(step, 500) * hp.lr == pytest.approx(expected)
