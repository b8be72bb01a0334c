"""Study tools: BiT-HyperRule at every boundary and at the run's global batch (against the
published rule's examples seen and learning rate), resolved before the run is built and shared
with `medxfer prepare`; bootstrap intervals (exactness and coverage); MixUp's properties."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from scipy.stats import beta as beta_distribution
from scipy.stats import chisquare, norm
from sklearn.metrics import roc_auc_score

from medxfer.commands.lightning import _config_processes
from medxfer.hyperrule import (
    bit_hyperrule,
    global_batch,
    hyperrule_of,
    hyperrule_overrides,
    resolution_settings,
)
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


# The published rule is stated at a global batch of 512: the run keeps its examples
# (512 x the rule's steps, each boundary rounded up to whole steps) and scales the rate
# (0.003 x batch / 512). Expected values worked out by hand.
@pytest.mark.parametrize(
    ("dataset_size", "batch", "lr", "schedule", "examples"),
    [
        pytest.param(
            10_000, 32, 0.0001875, (1600, 3200, 4800, 6400, 8000), 256_000, id="10k-at-32"
        ),
        pytest.param(
            10_000, 512, 0.003, (100, 200, 300, 400, 500), 256_000, id="10k-at-512-as-published"
        ),
        pytest.param(
            10_000, 48, 0.00028125, (1067, 2134, 3200, 4267, 5334), 256_032, id="10k-at-48-ceil"
        ),
        pytest.param(
            100_000, 256, 0.0015, (1000, 6000, 12_000, 18_000, 20_000), 5_120_000, id="100k-at-256"
        ),
        pytest.param(
            1_000_000, 1024, 0.006, (250, 3000, 6000, 9000, 10_000), 10_240_000, id="1M-at-1024"
        ),
    ],
)
def test_hyperrule_at_a_global_batch_keeps_the_rules_examples(
    dataset_size: int, batch: int, lr: float, schedule: tuple, examples: int
) -> None:
    run = bit_hyperrule(dataset_size, 224).for_batch(batch)
    assert run.schedule == schedule and run.base_lr == pytest.approx(lr, rel=1e-12)
    assert run.examples_seen == examples == schedule[-1] * batch
    assert run.mixup == bit_hyperrule(dataset_size, 224).mixup


@pytest.mark.parametrize(
    ("step", "lr"),
    [
        pytest.param(0, 0.0, id="start"),
        pytest.param(800, 0.00009375, id="mid-warmup"),  # 25,600 examples: the rule's step 50
        pytest.param(1600, 0.0001875, id="warmup-end"),
        pytest.param(3200, 0.0001875, id="at-first-decay"),
        pytest.param(3201, 0.00001875, id="after-first-decay"),
        pytest.param(4801, 0.000001875, id="after-second"),
        pytest.param(6401, 0.0000001875, id="after-third"),
        pytest.param(8000, None, id="over"),  # 256,000 examples: the rule's 500 x 512
    ],
)
def test_hyperrule_learning_rate_at_batch_32(step: int, lr: float | None) -> None:
    got = bit_hyperrule(10_000, 224).for_batch(32).lr_at(step)
    assert got == (None if lr is None else pytest.approx(lr, rel=1e-12))


def _cpu_trainer(**kw) -> L.Trainer:
    devices = kw.get("devices", 1) * kw.get("num_nodes", 1)
    kw.setdefault("strategy", "ddp" if devices > 1 else "auto")
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


@pytest.mark.parametrize(
    ("per_process", "devices", "nodes", "accumulate", "lr", "steps"),
    [
        pytest.param(64, 8, 1, 1, 0.003, 500, id="8-devices-x-64-is-the-rule"),
        pytest.param(32, 1, 1, 1, 0.0001875, 8000, id="1-device-x-32"),
        pytest.param(16, 2, 1, 3, 0.0005625, 2667, id="2-devices-x-16-x-3-accumulated"),
        pytest.param(8, 2, 2, 2, 0.000375, 4000, id="2-nodes-x-2-devices-x-8-x-2"),
        pytest.param(32, 1, 1, 16, 0.003, 500, id="32-x-16-accumulated-as-batch-split"),
    ],
)
def test_hyperrule_uses_the_global_batch(
    per_process: int, devices: int, nodes: int, accumulate: int, lr: float, steps: int
) -> None:
    """Issue 13: on 8 devices x 64 the rule's 0.003, not 0.003 x 64 / 512. The processes come
    from the trainer config as a built trainer counts them."""
    trainer = {"accelerator": "cpu", "devices": devices, "num_nodes": nodes}
    processes = _config_processes(trainer)
    assert processes == _cpu_trainer(devices=devices, num_nodes=nodes).world_size
    batch = global_batch(per_process, processes, accumulate)
    over = hyperrule_overrides({}, bit_hyperrule(10_000, 224).for_batch(batch))
    assert over["model.init_args.lr"] == pytest.approx(lr, rel=1e-12)
    assert over["model.init_args.optimizer"] == "sgd"
    assert (over["trainer.max_steps"], over["trainer.max_epochs"]) == (steps, -1)
    examples = steps * per_process * devices * nodes * accumulate
    assert 256_000 <= examples < 256_000 + per_process * devices * nodes * accumulate


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        pytest.param([0, 1], 2, id="list"),
        pytest.param("0,1,2", 3, id="comma-string"),
        pytest.param("4", 4, id="digit-string"),
        pytest.param("auto", 1, id="auto-on-cpu"),
    ],
)
def test_processes_of_a_trainer_config(devices: object, expected: int) -> None:
    assert _config_processes({"accelerator": "cpu", "devices": devices, "num_nodes": 1}) == expected
    assert (
        _config_processes({"accelerator": "cpu", "devices": devices, "num_nodes": 2})
        == 2 * expected
    )


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
    from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable

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


def _mixup_pairs(out: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Lambda and partner of each row of MixUp applied to one-hot images ``x_i = e_i``:
    ``lam e_i + (1 - lam) e_perm(i)``, read off the output alone."""
    b = len(out)
    own = out.diagonal()
    others = out - torch.diag(own)
    partner = torch.where(others.abs().sum(1) > 0, others.argmax(1), torch.arange(b))
    mixed = own < 1
    lam = float(own[mixed][0]) if mixed.any() else 1.0
    return lam, partner


def test_mixup_mixes_images_targets_and_masks_of_one_permutation_with_one_lambda() -> None:
    from medxfer.tasks import mixup_batch

    nan = float("nan")
    b = 6
    x = torch.eye(b, dtype=torch.float64)  # image i is e_i: each output row shows its pair
    t = torch.tensor([[1, 0], [0, 1], [1, nan], [0, 0], [nan, 1], [1, 1]], dtype=torch.float64)
    mask = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    for seed in range(20):
        torch.manual_seed(seed)
        out = mixup_batch({"image": x, "target": t, "mask": mask, "id": list("abcdef")}, 0.4)
        lam, partner = _mixup_pairs(out["image"])
        assert 0.0 <= lam <= 1.0
        assert sorted(partner.tolist()) == list(range(b))  # a permutation of the batch
        expected_image = torch.zeros(b, b, dtype=torch.float64)
        for i, j in enumerate(partner.tolist()):  # by hand: lam e_i + (1 - lam) e_j
            expected_image[i, i] += lam
            expected_image[i, j] += 1 - lam
        torch.testing.assert_close(out["image"], expected_image)
        for i, j in enumerate(partner.tolist()):
            for k in range(2):
                a, c = float(t[i, k]), float(t[j, k])
                got = float(out["target"][i, k])
                if math.isnan(a) or math.isnan(c):
                    assert math.isnan(got)  # unknown in either stays unknown
                else:
                    assert got == pytest.approx(lam * a + (1 - lam) * c)
            assert out["mask"][i].tolist() == [
                bool(mask[i, k]) or bool(mask[j, k]) for k in range(2)
            ]
        assert out["id"] == list("abcdef")


@pytest.mark.parametrize("alpha", [pytest.param(0.1, id="bit-0.1"), pytest.param(0.4, id="0.4")])
def test_mixup_lambda_follows_beta_alpha_alpha(alpha: float) -> None:
    """Lambda read off the mixed images, tested against scipy's Beta(alpha, alpha)."""
    from medxfer.tasks import mixup_batch

    torch.manual_seed(0)
    x = torch.eye(16, dtype=torch.float64)  # 16 rows: some row is mixed with another
    target = torch.zeros(16, 1, dtype=torch.float64)
    batch = {"image": x, "target": target}
    lams = [_mixup_pairs(mixup_batch(batch, alpha)["image"])[0] for _ in range(1000)]
    # binned (float32 draws stop at 1 - 6e-8, so the top bin starts below that)
    edges = np.array([0, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-6, 1])
    counts, _ = np.histogram(lams, edges)

    def p_value(a: float, b: float) -> float:
        expected = np.diff(beta_distribution(a, b).cdf(edges)) * len(lams)
        return chisquare(counts, expected).pvalue

    assert p_value(alpha, alpha) > 0.01
    assert p_value(alpha, 2 * alpha) < 1e-3  # the test can tell


def test_hyperrule_of_a_built_datamodule(synthetic_cxr) -> None:
    """The Python API: the rule of a datamodule's tables at global batch 16 x 2 accumulated,
    as config values; a datamodule and a task built with them train as the rule says."""
    from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
    from medxfer.tasks import MultiLabelClassifier

    table = CXRTable(str(synthetic_cxr["chexpert"]))
    dm = ChestXrayDataModule(table, image_size=32, batch_size=16, num_workers=0)
    rule = hyperrule_of(dm)
    resolution = resolution_settings(dm, rule)
    assert rule.resolution == (160, 128) and resolution == {"resize": 160, "image_size": 128}
    over = hyperrule_overrides(resolution, rule.for_batch(global_batch(16, 1, 2)))
    model = {k.split(".")[-1]: v for k, v in over.items() if k.startswith("model.")}
    got = tuple(model[k] for k in ("optimizer", "momentum", "schedule", "warmup_steps"))
    assert got == ("sgd", 0.9, "step", 1600)
    assert (model["decay_at"], model["mixup"]) == ([3200, 4800, 6400], 0.0)
    assert model["lr"] == pytest.approx(0.003 * 32 / 512)
    assert (over["trainer.max_steps"], over["trainer.max_epochs"]) == (8000, -1)  # x 32 = 500 x 512
    data = {k.split(".")[-1]: v for k, v in over.items() if k.startswith("data.")}
    dm = ChestXrayDataModule(table, batch_size=16, num_workers=0, **data)
    dm.setup("fit")
    assert dm.train_set[0]["image"].shape[-1] == 128
    task = MultiLabelClassifier(backbone="timm/test_resnet", num_classes=5, **model)
    # the task's rate at hand-picked steps (its warm-up counts steps from 1)
    for step, lr in ((799, 0.00009375), (1599, 0.0001875), (3200, 0.0001875), (3201, 1.875e-5)):
        assert task.lr_factor(step, 8000) * task.hparams.lr == pytest.approx(lr, rel=1e-12)


def _write_config(path: Path, data: dict, batch_size: int = 16, **trainer) -> Path:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, **trainer},
        "model": {
            "class_path": "MultiLabelClassifier",
            "init_args": {"backbone": "timm/test_resnet", "optimizer": "adam", "lr": 0.1},
        },
        "data": {**data, "init_args": {**data["init_args"], "batch_size": batch_size}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_hyperrule_resolves_before_building_and_prepare_caches_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`medxfer prepare --hyperrule true` caches at the side `medxfer fit --hyperrule true`
    trains at; fit builds the datamodule at the rule's resolution (the cache is accepted, and
    is all it needs: the source images are moved away), and the lr and steps are the rule's
    at the global batch, in the saved config too."""
    from lightning.pytorch.cli import SaveConfigCallback

    from medxfer.commands.lightning import build_cli
    from medxfer.commands.prepare import main as prepare_main
    from medxfer.data.cache import CacheSettings, ImageCache
    from medxfer.datamodules.chest_xray import write_synthetic_chexpert

    csv = write_synthetic_chexpert(tmp_path / "cxr", n_patients=30, size=40, seed=0)
    data = {
        "class_path": "ChestXrayDataModule",
        "init_args": {"train": {"csv": str(csv)}, "num_workers": 0},
    }
    config = _write_config(
        tmp_path / "cfg.yaml", data, accumulate_grad_batches=2, max_epochs=3, max_steps=7
    )
    cache = tmp_path / "cache.h5"
    rc = prepare_main(
        ["-c", str(config), str(cache), "--hyperrule", "true", "--workers", "0", "--no-progress"]
    )
    assert rc == 0
    ImageCache(cache, CacheSettings("grey", 160))  # the rule's resize for 40 px images
    assert "ChestXrayDataModule resize=160, image_size=128" in capsys.readouterr().out

    images = csv.parent / "train"
    images.rename(tmp_path / "away")  # from here on the cache alone
    monkeypatch.setattr(L.Trainer, "fit", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["medxfer"])
    cli = build_cli(
        [
            "fit",
            "-c",
            str(config),
            "--hyperrule=true",
            f"--data.init_args.cache={cache}",
            "--test_after_fit=false",
        ]
    )
    out = capsys.readouterr().out
    assert "first image 40x40 px -> ChestXrayDataModule resize=160, image_size=128" in out
    assert "global batch 32 (16 per process x 1 process(es) x 2 accumulated)" in out
    dm = cli.datamodule
    assert (dm.hparams.resize, dm.hparams.image_size, dm.train_set) == (160, 128, None)
    hp = cli.model.hparams
    assert (hp.optimizer, hp.lr) == ("sgd", pytest.approx(0.0001875, rel=1e-12))
    assert (cli.trainer.max_steps, cli.trainer.max_epochs) == (8000, -1)
    (saved,) = [c for c in cli.trainer.callbacks if isinstance(c, SaveConfigCallback)]
    assert saved.config["data"]["init_args"]["resize"] == 160
    # the shared settings left to the datamodule are saved as it chose them
    assert saved.config["data"]["init_args"]["name"] == "chexpert"
    assert saved.config["data"]["init_args"]["split"] == [0.75, 0.10, 0.15]
    assert saved.config["model"]["init_args"]["lr"] == pytest.approx(0.0001875, rel=1e-12)
    assert saved.config["trainer"]["max_steps"] == 8000
    dm.setup("fit")  # reads the prepared cache: same settings
    assert dm.train_set[0]["image"].shape[-1] == 128


@pytest.mark.parametrize(
    ("kind", "class_path", "image_size"),
    [
        pytest.param("mammo", "MammographyDataModule", 2048, id="mammography"),
        pytest.param("derm", "DermatologyDataModule", 448, id="dermatology"),
    ],
)
def test_hyperrule_keeps_the_resolution_of_a_datamodule_without_a_crop(
    kind: str, class_path: str, image_size: int, tmp_path: Path, capsys
) -> None:
    from medxfer.commands.prepare import datamodule_from_configs, rule_of_section
    from medxfer.datamodules.dermatology import write_synthetic_derm
    from medxfer.datamodules.mammography import write_synthetic_mammo

    if kind == "mammo":
        table = write_synthetic_mammo(tmp_path / kind, n_exams=20, size=40, seed=0)
    else:
        table = write_synthetic_derm(tmp_path / kind, n_cases=20, size=40, seed=0)
    data = {"class_path": class_path, "init_args": {"train": str(table), "num_workers": 0}}
    with pytest.warns(UserWarning, match=rf"{class_path} resizes to image_size without a crop"):
        rule, _, batch_size = rule_of_section(data)
    assert "resize" not in data["init_args"] and "image_size" not in data["init_args"]
    assert f"image_size={image_size} kept" in capsys.readouterr().out
    assert rule.schedule[-1] == 500 and rule.image_size == (40, 40)
    assert batch_size == {"mammo": 8, "derm": 16}[kind]  # the section leaves it to the class
    config = _write_config(tmp_path / "cfg.yaml", data, batch_size=4)
    with pytest.warns(UserWarning, match="without a crop"):
        dm = datamodule_from_configs([config], hyperrule=True)
    assert dm.hparams.image_size == dm.cache_side == image_size


def test_fit_refuses_a_run_of_another_global_batch_than_the_rule_was_set_for() -> None:
    """The rule's steps were set for 64 examples a step (from the trainer config); a launcher
    that starts 1 process of 16 is refused before training, naming both batches."""
    from types import SimpleNamespace

    from medxfer.commands.lightning import MedxferCLI
    from medxfer.errors import ConfigError

    run = SimpleNamespace(
        hyperrule_batch=64,
        datamodule=SimpleNamespace(batch_size=16),
        trainer=SimpleNamespace(world_size=1, accumulate_grad_batches=1),
        lock_run_folder=lambda: None,  # the run folder and --ckpt_path checks: not this test's
        check_ckpt_path=lambda: None,
    )
    with pytest.raises(ConfigError, match=r"global batch of 64 .* but the run has 16"):
        MedxferCLI.before_fit(run)  # type: ignore[arg-type]
    run.trainer.world_size = 4  # 16 x 4 processes: the batch the rule was set for
    MedxferCLI.before_fit(run)  # type: ignore[arg-type]


# --- study files and executors ------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
FAKE_FIT = [sys.executable, str(Path(__file__).with_name("fake_fit.py"))]


def _study_file(tmp_path: Path, body: dict, name: str = "study.yaml") -> Path:
    """A study file in ``tmp_path`` whose base config is an (empty) YAML file beside it."""
    for config in ("base.yaml", "task_a.yaml", "task_b.yaml"):
        (tmp_path / config).write_text("{}\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), **body}, sort_keys=False))
    return path


GRID = {
    "base": ["{tmp}/base.yaml"],
    "overrides": {"trainer.max_steps": 3},
    "axes": {
        "init": {
            "moco-v2": {
                "model.init_args.backbone": "resnet50",
                "model.init_args.pretrained": "moco-v2",
            },
            "random": {"model.init_args.backbone": "resnet50"},
        },
        "task": {"a": {"config": "{tmp}/task_a.yaml"}, "b": {"config": ["{tmp}/task_b.yaml"]}},
        "shots": {"data.init_args.shots_per_class": [1, 10]},
    },
    "seeds": 2,
    "exclude": [{"init": "random", "shots": 1}],
}


def _grid(tmp_path: Path, **change: object) -> Path:
    text = yaml.safe_dump({**GRID, **change}, sort_keys=False).replace("{tmp}", str(tmp_path))
    return _study_file(tmp_path, yaml.safe_load(text))


def test_a_study_file_expands_into_named_runs(tmp_path: Path) -> None:
    from medxfer.study.spec import load_study

    plan = load_study(_grid(tmp_path))
    # by hand: 2 inits x 2 tasks x 2 shot counts, less random x 1-shot (2 runs), first axis slowest
    expected = [
        ("moco-v2_a_shots1", "moco-v2", "a", 1),
        ("moco-v2_a_shots10", "moco-v2", "a", 10),
        ("moco-v2_b_shots1", "moco-v2", "b", 1),
        ("moco-v2_b_shots10", "moco-v2", "b", 10),
        ("random_a_shots10", "random", "a", 10),
        ("random_b_shots10", "random", "b", 10),
    ]
    assert [r.name for r in plan.runs] == [e[0] for e in expected]
    for run, (_, init, task, shots) in zip(plan.runs, expected, strict=True):
        assert run.axes == {"init": init, "task": task, "shots": str(shots)}
        assert run.configs == (str(tmp_path / "base.yaml"), str(tmp_path / f"task_{task}.yaml"))
        assert run.overrides["trainer.max_steps"] == 3
        assert run.overrides["data.init_args.shots_per_class"] == shots
        assert ("model.init_args.pretrained" in run.overrides) == (init == "moco-v2")
    assert plan.seeds == [0, 1] and len(plan.replicas()) == 12
    assert plan.replicas()[1].run_dir == tmp_path / "out/moco-v2_a_shots1/seed1"
    # a name template and an only rule
    plan = load_study(_grid(tmp_path, name="{task}-{init}-k{shots}", only=[{"task": "b"}]))
    assert [r.name for r in plan.runs] == ["b-moco-v2-k1", "b-moco-v2-k10", "b-random-k10"]


@pytest.mark.parametrize(
    "value",
    [3, 0.1, 1e-4, True, None, "resnet50", "1e-3", [1, 2], {"a": [1, None]}],
    ids=repr,
)
def test_an_override_argument_reads_back_as_its_value(value: object) -> None:
    from medxfer.study.spec import override_argument

    key, text = override_argument("a.b", value)[2:].split("=", 1)
    # jsonargparse reads a command-line value as YAML; a string stays as written
    assert key == "a.b" and (text if isinstance(value, str) else yaml.safe_load(text)) == value


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param({"name": "{init}"}, "two runs are named 'moco-v2'", id="same-name"),
        pytest.param({"name": "{model}"}, "unknown axis 'model'", id="template-axis"),
        pytest.param({"exclude": [{"size": 1}]}, "unknown axis 'size'", id="rule-axis"),
        pytest.param({"only": [{"init": "byol"}]}, "unknown value(s) byol", id="rule-value"),
        pytest.param({"seeds": [0, 0]}, "repeats a seed", id="seeds"),
        pytest.param(
            {"axes": {"init": {"a/b": {}}}, "exclude": None}, "not a plain folder name", id="slash"
        ),
        pytest.param(
            {"axes": {"x": {"c": {"config": "nope.yaml"}}}, "exclude": None},
            "nope.yaml not found",
            id="config",
        ),
        pytest.param(
            {"axes": {"x": {"c": {"1bad": 2}}}, "exclude": None},
            "'1bad' is not a fit config key",
            id="key",
        ),
        pytest.param({"axis": {}}, "axis: unknown key", id="top-key"),
    ],
)
def test_a_study_file_it_cannot_use_is_named(tmp_path: Path, change: dict, fragment: str) -> None:
    from medxfer.study.spec import StudyError, load_study

    with pytest.raises(StudyError) as err:
        load_study(_grid(tmp_path, **change))
    assert fragment in str(err.value) and str(tmp_path / "study.yaml") in str(err.value)


def test_a_run_folder_of_another_study_version_is_refused(tmp_path: Path) -> None:
    from medxfer.study.executors import prepare
    from medxfer.study.spec import StudyError, check_run_folders, load_study

    plan = load_study(_grid(tmp_path))
    prepare(plan, plan.replicas())
    check_run_folders(plan)  # the same version: accepted
    assert json.loads((plan.out / "random_b_shots10" / "axes.json").read_text()) == {
        "init": "random", "task": "b", "shots": "10"
    }  # fmt: skip
    assert (plan.out / "study.yaml").read_text() == plan.file.read_text()
    changed = load_study(_grid(tmp_path, overrides={"trainer.max_steps": 4}))
    with pytest.raises(StudyError, match="moco-v2_a_shots1: made from another version"):
        check_run_folders(changed)
    # replicas without a run spec (made by hand or another tool)
    (tmp_path / "other").mkdir()
    other = load_study(_grid(tmp_path, out=str(tmp_path / "other")))
    (other.out / "moco-v2_a_shots1" / "seed0").mkdir(parents=True)
    with pytest.raises(StudyError, match=r"holds replicas but no run_spec\.json"):
        check_run_folders(other)


def test_shipped_study_files_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file in studies/ expands (configs present, names unique); the benchmark's grid is
    21 initialisations x 7 tasks x 10 runs; the scale study's medical source names its
    weights by the run's model (``cxr-{model}``)."""
    from medxfer.study.spec import load_study

    monkeypatch.chdir(REPO)
    files = sorted((REPO / "studies").glob("*.yaml"))
    assert files
    counts = {f.stem: len(load_study(f).replicas()) for f in files}
    assert counts == {"benchmark_resnet50": 21 * 7 * 10, "bit_medical": 5 * 4 * 5,
                      "scale": 5 * 2 * 2 * 6 * 5, "demo": 2 * 3,
                      "tb_pretraining": 7 * 5, "pretrain_demo": 2 * 2}  # fmt: skip
    plan = load_study(REPO / "studies/benchmark_resnet50.yaml")
    assert len({r.axes["init"] for r in plan.runs}) == 21
    assert {r.axes["init"] for r in plan.runs} >= {"supervised", "moco-v2", "imagenet-chexpert"}
    # every initialisation and backbone is a registered weight source of its architecture
    from medxfer.backbones import BACKBONES

    for file in ("benchmark_resnet50", "bit_medical", "tb_pretraining"):
        for r in load_study(REPO / f"studies/{file}.yaml").runs:
            if r.overrides["model.init_args.pretrained"] is None:
                continue  # random init
            arch = r.overrides.get("model.init_args.backbone", "resnet50")
            sources = BACKBONES.entry(arch).metadata["sources"]
            assert r.overrides["model.init_args.pretrained"] in sources, (file, r.name)
    scale = {r.name: r for r in load_study(REPO / "studies/scale.yaml").runs}
    run = scale["cifar100_cxr_bit-r152x4_shots5"]
    assert run.overrides["model.init_args.pretrained"] == "cxr-bit-r152x4"
    assert run.overrides["model.init_args.backbone"] == "bit-r152x4"
    assert run.overrides["data.init_args.shots_per_class"] == 5
    assert run.configs[-1].endswith("cifar100_bit_reduced.yaml")  # the study's reduced recipe
    assert run.overrides["hyperrule"] == "reduced"


def _fake_study(tmp_path: Path, runs: int = 2, seeds: int = 2) -> object:
    from medxfer.study.spec import load_study

    levels = {f"r{i}": {"model.init_args.lr": 0.01 * (i + 1)} for i in range(runs)}
    return load_study(_study_file(tmp_path, {"base": [str(tmp_path / "base.yaml")],
                                             "axes": {"cfg": levels}, "seeds": seeds}))  # fmt: skip


def _steps(replica) -> list[int]:
    return [int(s) for s in (replica.run_dir / "steps.txt").read_text().split()]


def test_the_local_executor_continues_after_a_killed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from medxfer.study.executors import prepare, run_local

    plan = _fake_study(tmp_path)
    replicas = plan.replicas()
    prepare(plan, replicas)
    monkeypatch.setenv("FAKE_FIT_DIE", "seed1:3")  # seed 1 of each run dies after step 3
    failed = run_local(replicas, jobs=2, fit=FAKE_FIT)
    assert [r.label for r in failed] == ["r0/seed1", "r1/seed1"]
    assert [_steps(r) for r in replicas] == [[1, 2, 3, 4, 5], [1, 2, 3]] * 2
    capsys.readouterr()
    from medxfer.commands import main as cli_main

    (plan.out / "removed-level" / "seed0").mkdir(parents=True)  # a run no longer in the file
    assert cli_main(["study", "plan", str(plan.file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["r0", "1/2", "done,", "1", "resume", "cfg=r0"]
    assert "hold replicas of no run of this file: removed-level" in lines[-2]
    assert lines[-1].endswith("4 replica(s) in " + str(plan.out) + ": 2 done, 2 to resume from "
                              "last.ckpt, 0 to run")  # fmt: skip
    assert run_local(replicas, jobs=2, fit=FAKE_FIT) == []
    out = capsys.readouterr().out
    # the finished replicas were skipped, the killed ones continued from step 3
    assert [_steps(r) for r in replicas] == [[1, 2, 3, 4, 5]] * 4
    assert out.count("done, skipped") == 2 and out.count("resuming from its last.ckpt") == 2
    for r in replicas:
        assert json.loads((r.run_dir / "results.json").read_text()) == {
            "test/a/auroc": 0.5 + r.seed / 100
        }


def test_submitit_runs_a_grid_end_to_end(tmp_path: Path) -> None:
    """submitit's DebugExecutor (the tasks in this process, in order) runs a 2-run grid."""
    import submitit

    from medxfer.study.executors import collect, prepare, submit

    plan = _fake_study(tmp_path, runs=2, seeds=1)
    replicas = plan.replicas()
    prepare(plan, replicas)
    executor = submitit.DebugExecutor(folder=tmp_path / "submitit")
    jobs = submit(replicas, executor, fit=FAKE_FIT)
    assert len(jobs) == 2 and collect(jobs) == []
    for r, job in zip(replicas, jobs, strict=True):
        assert job.result() == str(r.run_dir) and _steps(r) == [1, 2, 3, 4, 5]
        argv = json.loads((r.run_dir / "config.yaml").read_text())["argv"]
        assert f"--model.init_args.lr={r.run.overrides['model.init_args.lr']}" in argv
    assert submit(replicas, executor, fit=FAKE_FIT) == []  # all done: nothing submitted


@pytest.mark.slow  # ~1 min: real processes, a real time-out signal
def test_submitit_local_requeues_on_time_out_and_a_failed_task_leaves_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit's LocalExecutor, one process per task: the controller sends USR2
    ``signal_delay_s`` before the time-out, submitit calls ``ReplicaJob.checkpoint`` and
    requeues; the requeued task continues from last.ckpt. The other task dies; its failure is
    reported and the first task's result stays."""
    import submitit

    from medxfer.study.executors import collect, prepare, submit

    plan = _fake_study(tmp_path, runs=1, seeds=2)
    replicas = plan.replicas()
    prepare(plan, replicas)
    monkeypatch.setenv("FAKE_FIT_STEPS", "300")
    monkeypatch.setenv("FAKE_FIT_SLEEP", "0.1")
    monkeypatch.setenv("FAKE_FIT_DIE", "seed1:2")
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=1, signal_delay_s=40)  # USR2 after 20 s
    jobs = submit(replicas, executor, fit=FAKE_FIT)
    failed = collect(jobs)
    assert [j for j, _ in failed] == [jobs[1]] and "r0/seed1 failed (exit 9)" in failed[0][1]
    assert _steps(replicas[0]) == list(range(1, 301))  # continued, never restarted
    assert "resuming from its last.ckpt" in jobs[0].stdout()
    assert (replicas[0].run_dir / "results.json").is_file()


def test_a_requeued_task_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What submitit does on pre-emption or time-out: call the task's ``checkpoint`` (while the
    task runs) and run the submission it returns. The fit is stopped after a step (it writes
    last.ckpt) and the requeued task continues from there."""
    import threading

    from medxfer.study.executors import ReplicaJob, prepare

    plan = _fake_study(tmp_path, runs=1, seeds=1)
    (replica,) = plan.replicas()
    prepare(plan, [replica])
    monkeypatch.setenv("FAKE_FIT_STEPS", "40")
    monkeypatch.setenv("FAKE_FIT_SLEEP", "0.05")
    job = ReplicaJob(FAKE_FIT)
    outcome: list[BaseException | str] = []

    def task() -> None:
        try:
            outcome.append(job(replica))
        except RuntimeError as err:
            outcome.append(err)

    thread = threading.Thread(target=task)
    thread.start()
    steps = replica.run_dir / "steps.txt"
    while not (steps.is_file() and len(steps.read_text().split()) >= 3):
        time.sleep(0.02)
    delayed = job.checkpoint(replica)
    thread.join(timeout=30)
    assert isinstance(outcome[0], RuntimeError) and "exit 143" in str(outcome[0])
    stopped_at = len(_steps(replica))
    assert 3 <= stopped_at < 40 and not (replica.run_dir / "results.json").exists()
    assert delayed.result() == str(replica.run_dir)  # the requeued task
    assert _steps(replica) == list(range(1, 41))  # continued, not restarted


def test_the_sweeps_agent_command_reaches_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated W&B sweep, expanded as a W&B agent does (``${args}`` -> ``--only=VALUE``),
    runs ``medxfer study run`` on one replica whose fit command line parses (LightningCLI) to
    that run's settings."""
    from medxfer import study
    from medxfer.commands import main as cli_main
    from medxfer.commands.study import parse_fit_arguments

    monkeypatch.chdir(tmp_path)
    tiny = str(REPO / "configs" / "tiny.yaml")
    body = {"base": [tiny], "axes": {"init": {"slow": {"model.init_args.lr": 0.001},
                                              "fast": {"model.init_args.lr": 0.1}},
                                     "frac": {"data.init_args.train_fraction": [0.5, 1.0]}},
            "seeds": 2}  # fmt: skip
    file = _study_file(tmp_path, body)
    assert cli_main(["study", "sweep", str(file), "--to", "sweep.yaml"]) == 0
    sweep = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert sweep["method"] == "grid" and len(sweep["parameters"]["only"]["values"]) == 8
    value = sweep["parameters"]["only"]["values"][5]
    assert value == "fast_frac0.5/seed1"
    args = [f"--{k}={value}" for k in sweep["parameters"]]
    command = [a for c in sweep["command"] for a in (args if c == "${args}" else [c])]
    assert command[:3] == ["medxfer", "study", "run"]
    ran = []
    monkeypatch.setattr(study, "run_replica", lambda cmd, log, on_start=None: ran.append(cmd) or 1)
    with pytest.raises(SystemExit):  # the stand-in exits 1: the replica "failed"
        cli_main(command[1:])
    (cmd,) = ran
    assert cmd[1:4] == ["-m", "medxfer", "fit"]

    config = parse_fit_arguments(cmd[4:])
    assert config["model"]["init_args"]["lr"] == 0.1
    assert config["data"]["init_args"]["train_fraction"] == 0.5
    assert config["seed_everything"] == 1
    assert Path(config["trainer"]["default_root_dir"]) == Path("out/fast_frac0.5/seed1").absolute()


@pytest.mark.slow  # two real fits and two schema checks: ~2 min on a busy 2-core machine
def test_a_two_run_grid_of_real_fits_end_to_end(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    """``medxfer study run`` of configs/tiny.yaml at two learning rates, both at once: each run's
    replica trains, tests and is counted done by ``study plan``; its saved config holds the
    run's settings; a second ``run`` skips both."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic").symlink_to(synthetic_cxr["root"])
    body = {"base": [str(REPO / "configs/tiny.yaml")], "overrides": {"trainer.max_steps": 2},
            "axes": {"lr": {"model.init_args.lr": [0.01, 0.1]}}, "seeds": [3]}  # fmt: skip
    file = _study_file(tmp_path, body)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    medxfer = [sys.executable, "-m", "medxfer", "study"]

    def study(*args: str) -> str:
        proc = subprocess.run(
            [*medxfer, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    study("run", str(file), "--jobs", "2")
    for lr in ("0.01", "0.1"):
        run = tmp_path / "out" / f"lr{lr}"
        assert json.loads((run / "axes.json").read_text()) == {"lr": lr}
        saved = yaml.safe_load((run / "seed3" / "config.yaml").read_text())
        assert saved["model"]["init_args"]["lr"] == float(lr) and saved["seed_everything"] == 3
        assert saved["trainer"]["max_steps"] == 2
        assert any(
            k.startswith("test/") for k in json.loads((run / "seed3/results.json").read_text())
        )
    assert "2 done, 0 to resume from last.ckpt, 0 to run" in study("plan", str(file))
    assert study("run", str(file)).count("done, skipped") == 2


def test_run_on_slurm_submits_one_array_task_per_unfinished_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--executor slurm``: submitit's AutoExecutor (here a recorder: no SLURM) gets the
    ``--submitit`` settings and ``--jobs`` as the array's parallelism, and one task per replica
    not yet done."""
    import submitit

    from medxfer.commands import main as cli_main
    from medxfer.commands import study as study_command
    from medxfer.study.executors import ReplicaJob, prepare

    plan = _fake_study(tmp_path, runs=2, seeds=2)
    prepare(plan, plan.replicas())
    done = plan.replicas()[1].run_dir
    done.mkdir(parents=True)
    (done / "results.json").write_text('{"test/a/auroc": 0.5}')
    record: dict = {}

    class Recorder:
        def __init__(self, folder: Path, cluster: str | None = None) -> None:
            record.update(folder=folder, cluster=cluster)

        def update_parameters(self, **kw: object) -> None:
            record["parameters"] = kw

        def map_array(self, fn: object, items: list) -> list:
            record.update(fn=fn, items=items)
            return []

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    monkeypatch.setattr(study_command, "check_fit_keys", lambda file, runs: None)
    args = ["study", "run", str(plan.file), "--executor", "slurm", "--jobs", "3"]
    assert cli_main([*args, "--submitit", "timeout_min=60", "slurm_partition=gpu"]) == 0
    assert record["cluster"] == "slurm" and record["folder"] == plan.out / ".submitit"
    assert record["parameters"] == {
        "timeout_min": 60, "slurm_partition": "gpu", "slurm_array_parallelism": 3
    }  # fmt: skip
    assert isinstance(record["fn"], ReplicaJob)
    assert [r.label for r in record["items"]] == ["r0/seed0", "r1/seed0", "r1/seed1"]
