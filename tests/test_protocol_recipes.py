"""The shipped protocol recipes against the published values (Hosseinzadeh Taher et al., 2021,
the benchmark of pre-trained ResNet-50s; Cherti & Jitsev, 2021, the scale study's reduced BiT
recipe; Kolesnikov et al., 2020, BiT-HyperRule on CIFAR-10), the benchmark's training
augmentation, Nesterov momentum reaching the optimizer, and the k-shot path on chest X-rays."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import yaml

from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.hyperrule import bit_hyperrule
from medxfer.tasks import MultiLabelClassifier
from medxfer.transforms import ImageTransform, sample_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / name).read_text())


def _callback(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [
        c.get("init_args", {})
        for c in config["trainer"]["callbacks"]
        if c["class_path"].endswith(name)
    ]
    return found


def test_the_published_hyperrule_on_cifar10() -> None:
    """BiT, section 3.3: 50k training images under 96 x 96 px -> resize 160, crop 128; 10k
    steps (warm-up 500, /10 at 3k, 6k, 9k) at batch 512, lr 0.003; MixUp 0.1."""
    rule = bit_hyperrule(50_000, (32, 32))
    assert rule.resolution == (160, 128)
    assert rule.schedule == (500, 3000, 6000, 9000, 10_000)
    assert (rule.mixup, rule.base_lr, rule.batch_size, rule.momentum) == (0.1, 0.003, 512, 0.9)


def test_the_reduced_bit_config_is_the_scale_studys_recipe() -> None:
    cfg = _config("cifar10_bit_reduced.yaml")
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    # the scale study's released fine-tuning config: SGD_AGC, momentum 0.9, base_lr 0.001,
    # batch 128, weight_decay 0; its optimiser: Nesterov, clipping 0.01, the head not clipped
    assert data["batch_size"] == 128 and data["dataset"] == "cifar10"
    assert (model["optimizer"], model["lr"], model["momentum"], model["nesterov"]) == (
        "sgd",
        0.001,
        0.9,
        True,
    )
    assert model["weight_decay"] == 0.0 and model["agc_clip"] == 0.01
    assert model.get("wd_to_init", 0.0) == 0.0
    # the rule's step schedule in steps (not rescaled to the batch), MixUp and resolution
    rule = bit_hyperrule(50_000, (32, 32))
    assert model["schedule"] == "step" and model["decay_factor"] == rule.decay_factor
    assert model["warmup_steps"] == rule.schedule[0]
    assert model["decay_at"] == list(rule.schedule[1:-1])
    assert cfg["trainer"]["max_steps"] == rule.total_steps and model["mixup"] == rule.mixup
    assert (data["resize"], data["image_size"]) == rule.resolution


def test_the_classification_benchmark_config_is_the_published_recipe() -> None:
    cfg = _config("cls_benchmark_nih.yaml")
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    assert (model["optimizer"], model["lr"], data["batch_size"]) == ("adam", 0.0002, 32)
    assert (model["schedule"], model["plateau_monitor"], model["plateau_mode"]) == (
        "plateau",
        "val/loss",
        "min",
    )
    assert (model["plateau_factor"], model["plateau_patience"]) == (0.5, 5)
    stop = _callback(cfg, "EarlyStopping")
    assert (stop["monitor"], stop["mode"], stop["patience"]) == ("val/loss", "min", 10)
    assert _callback(cfg, "ConvergenceCallback")["monitor"] == "val/loss"
    assert data["recipe"] == "benchmark" and data["ten_crop"] is True
    assert data["image_size"] == 224 and len(data["labels"]) == 14


@pytest.mark.parametrize("name", ["drive", "montgomery", "siim"])
def test_the_segmentation_benchmark_configs_are_the_published_recipe(name: str) -> None:
    cfg = _config(f"seg_benchmark_{name}.yaml")
    model = cfg["model"]["init_args"]
    assert cfg["model"]["class_path"] == "Segmenter"
    assert (model["optimizer"], model["lr"], model["schedule"]) == ("adam", 0.001, "cosine")
    assert _callback(cfg, "EarlyStopping")["patience"] == 20
    assert "monitor" in _callback(cfg, "ConvergenceCallback")


def test_the_benchmark_recipe_rotates_7_degrees_and_crops_resized(
    synthetic_cxr: dict[str, Path],
) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, recipe="benchmark", num_workers=0
    )
    steps = dm.transform(True).geometry.transforms
    rotate = next(s for s in steps if isinstance(s, A.Rotate))
    assert tuple(rotate.limit) == (-7, 7)
    assert any(isinstance(s, A.RandomResizedCrop) for s in steps)
    assert any(isinstance(s, A.HorizontalFlip) for s in steps)


def test_a_resized_crop_zooms_where_a_random_crop_cuts_a_window() -> None:
    """On a horizontal ramp (value = column), a random 28-px window of the 32-px image spans 27
    of its 31 columns in every sample; a random resized crop spans a varying share of them."""
    ramp = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))

    def spans(crop: str) -> list[float]:
        t = ImageTransform(28, resize=32, train=True, hflip=False, crop=crop, seed=1)  # type: ignore[arg-type]
        out = []
        for key in range(12):
            with sample_key(key):
                row = t(ramp)[0, 14].float().numpy()
            out.append(float(row.max() - row.min()) / 255)
        return out

    np.testing.assert_allclose(spans("random"), 27 / 31, atol=1 / 255)
    resized = spans("resized")
    assert min(resized) < 0.8 and len({round(s, 2) for s in resized}) > 3


def test_nesterov_reaches_the_optimizer() -> None:
    task = MultiLabelClassifier(backbone="timm/test_resnet", optimizer="sgd", nesterov=True)
    assert task.configure_optimizers()["optimizer"].param_groups[0]["nesterov"] is True


def test_k_shot_on_chest_xrays_keeps_k_per_stratum_nested_and_the_full_test_set(
    synthetic_cxr: dict[str, Path],
) -> None:
    """Multi-label k-shot: k cases of each rarest-positive-label stratum (computed here by
    hand), nested across k for a seed; validation and test sets are the full ones."""

    def dm(**kw: Any) -> ChestXrayDataModule:
        out = ChestXrayDataModule(
            CXRTable(str(synthetic_cxr["chexpert"])), image_size=16, num_workers=0, **kw
        )
        out.setup("fit")
        return out

    full = dm()
    train = full.prepare_tables()["train"]
    labels = full.label_names
    positive = train[labels].fillna(0.0) > 0.5
    prevalence = positive.mean()
    rarest_first = sorted(labels, key=lambda n: (prevalence[n], labels.index(n)))
    stratum = [next((n for n in rarest_first if row[n]), "none") for _, row in positive.iterrows()]
    sizes = Counter(stratum)
    by_id = dict(zip(train["id"], stratum, strict=True))
    kept: dict[int, set[str]] = {}
    for k in (1, 3):
        few = dm(shots_per_class=k, subsample_seed=5)
        ids = set(few.train_set.ids)
        assert Counter(by_id[i] for i in ids) == {s: min(k, n) for s, n in sizes.items()}
        assert few.val_set.ids == full.val_set.ids
        assert {n: d.ids for n, d in few.test_sets.items()} == {
            n: d.ids for n, d in full.test_sets.items()
        }
        kept[k] = ids
    assert kept[1] < kept[3]
    assert set(dm(shots_per_class=1, subsample_seed=6).train_set.ids) != kept[1]


def test_fit_hyperrule_reduced_on_a_few_shot_natural_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--hyperrule reduced`` on the reduced CIFAR-10 config at 1 shot per class (10 images,
    under 20k): the rule's small-data schedule kept in steps at the config's batch of 128 --
    warm-up 100, x 0.1 after 200, 300, 400, end at 500 -- lr 0.001 and no MixUp (the scale
    study's few-shot runs), where ``--hyperrule true`` would rescale to the batch."""
    import lightning as L

    from medxfer.commands.lightning import build_cli
    from medxfer.datamodules.natural import write_synthetic_cifar

    root = tmp_path / "natural"
    write_synthetic_cifar(root, "cifar10", "python", 60, 20)
    monkeypatch.setattr(L.Trainer, "fit", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["medxfer"])
    common = [
        "fit", "-c", str(CONFIGS / "cifar10_bit_reduced.yaml"),
        f"--data.init_args.root={root}", "--data.init_args.shots_per_class=1",
        "--data.init_args.num_workers=0", "--model.init_args.backbone=timm/test_resnet",
        "--model.init_args.pretrained=null", "--model.init_args.channels_last=false",
        "--trainer.precision=32-true", "--trainer.accelerator=cpu", "--trainer.devices=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}", "--trainer.logger=false",
        "--test_after_fit=false",
    ]  # fmt: skip
    cli = build_cli([*common, "--hyperrule=reduced"])
    assert "the scale study's reduced variant, at global batch 128" in capsys.readouterr().out
    hp = cli.model.hparams
    assert (hp.optimizer, hp.lr, hp.nesterov, hp.agc_clip) == ("sgd", 0.001, True, 0.01)
    assert (hp.warmup_steps, list(hp.decay_at), hp.mixup) == (100, [200, 300, 400], 0.0)
    assert (cli.trainer.max_steps, cli.trainer.max_epochs) == (500, -1)
    published = build_cli([*common, "--hyperrule=true"])  # the published rule, rescaled
    assert published.model.hparams.lr == pytest.approx(0.003 * 128 / 512)
    assert published.trainer.max_steps == 500 * 512 // 128
