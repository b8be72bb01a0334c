"""Temperature scaling, per-label reliability and the fairness figures of a real (tiny) fit
and test of its best checkpoint: what the callbacks write equals the functional metrics on the
same predictions."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics.functional.classification import binary_sensitivity_at_specificity

from medxfer import artifacts
from medxfer.callbacks import CalibrationCallback, SubgroupCallback
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.metrics import (
    equalized_odds_gap,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    metric_key,
    temperature_scaled,
    tpr_at_specificity,
)
from medxfer.tasks import MultiLabelClassifier


class Collect(Callback):
    """The step outputs: each fitting validation's (by epoch) and the test's."""

    def __init__(self) -> None:
        self.val: dict[int, list] = {}
        self.test: list = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, *args, **kw) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.val.setdefault(trainer.current_epoch, []).append(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, *args, **kw) -> None:
        self.test.append(outputs)


class Scripted(Callback):
    """Logs ``scripted`` = 1, 3, 2 in epochs 0, 1, 2: the best checkpoint is epoch 1's, not
    the last one's."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("scripted", [1.0, 3.0, 2.0][trainer.current_epoch])


def _cat(outputs: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return (
        torch.cat([o["probs"] for o in outputs]).double(),
        torch.cat([o["target"] for o in outputs]).double(),
        [str(s) for o in outputs for s in o["groups"]["sex"]],
    )


@pytest.fixture(scope="module")
def tested(synthetic_cxr: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    import lightning as L

    root = tmp_path_factory.mktemp("fairness_fit")
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=8, num_workers=0
    )
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names, lr=0.05
    )
    collect = Collect()
    keeper = ModelCheckpoint(dirpath=root / "ckpt", monitor="scripted", mode="max")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=[
            CalibrationCallback(),
            SubgroupCallback(["sex"], min_size=5, specificity=0.8),
            collect,
            Scripted(),
            keeper,
        ],
    )
    L.seed_everything(0)
    trainer.fit(task, datamodule=dm)
    # our own checkpoint: its datamodule hyper-parameters hold a CXRTable object
    trainer.test(task, datamodule=dm, ckpt_path="best", verbose=False, weights_only=False)
    best_epoch = int(re.search(r"epoch=(\d+)", keeper.best_model_path).group(1))
    return trainer, collect, best_epoch, root / artifacts.ANALYSIS_DIR, dm.label_names


def test_temperature_is_the_best_checkpoints_and_scales_the_test_ece(tested) -> None:
    trainer, collect, best_epoch, out, _ = tested
    cal = json.loads((out / artifacts.calibration_json("test/chexpert")).read_text())
    val_probs, val_target, _ = _cat(collect.val[best_epoch])
    expected_t = fit_temperature(logits_from_probs(val_probs, "multilabel"), val_target)
    assert best_epoch == 1 and cal[artifacts.TEMPERATURE_EPOCH] == 1
    assert cal[artifacts.TEMPERATURE] == pytest.approx(expected_t, rel=1e-4)
    last_probs, last_target, _ = _cat(collect.val[2])  # the last validation's T is another
    last_t = fit_temperature(logits_from_probs(last_probs, "multilabel"), last_target)
    assert cal[artifacts.TEMPERATURE] != pytest.approx(last_t, rel=1e-3)
    probs, target, _ = _cat(collect.test)
    t = cal[artifacts.TEMPERATURE]
    scaled = temperature_scaled(logits_from_probs(probs, "multilabel"), t, "multilabel")
    expected_ece = float(expected_calibration_error(scaled, target, task="multilabel"))
    assert cal[artifacts.ECE_SCALED] == pytest.approx(expected_ece, abs=1e-5)
    logged = trainer.callback_metrics
    assert float(logged["test/chexpert/ece_scaled"]) == pytest.approx(expected_ece, abs=1e-5)
    assert float(logged["test/chexpert/temperature"]) == pytest.approx(t)


def test_per_label_reliability_bins_and_diagrams(tested) -> None:
    _, collect, _, out, labels = tested
    cal = json.loads((out / artifacts.calibration_json("test/chexpert")).read_text())
    probs, target, _ = _cat(collect.test)
    for k, label in enumerate(labels):
        known = ~torch.isnan(target[:, k])
        p, y = probs[known, k].numpy(), target[known, k].numpy()
        idx = np.minimum((p * 15).astype(int), 14)
        count = np.bincount(idx, minlength=15)
        got = cal[artifacts.BINS_PER_LABEL][metric_key(label)]  # "Pleural_Effusion"
        assert got["count"] == count.tolist()
        for b in np.nonzero(count)[0]:
            assert got["confidence"][b] == pytest.approx(p[idx == b].mean(), abs=1e-6)
            assert got["outcome"][b] == pytest.approx(y[idx == b].mean(), abs=1e-6)
        assert all(got["outcome"][b] is None for b in np.nonzero(count == 0)[0])
    assert (out / artifacts.reliability_labels_plot("test/chexpert")).is_file()
    assert (out / artifacts.reliability_labels_plot("val")).is_file()


def test_subgroup_fairness_figures_equal_the_functional_ones(tested) -> None:
    trainer, collect, _, out, labels = tested
    rep = json.loads((out / artifacts.subgroups_json("test/chexpert")).read_text())
    rep = rep[artifacts.ATTRIBUTES]["sex"]
    probs, target, sex = _cat(collect.test)
    common = [labels.index(n) for n in rep["operating_labels"]]
    assert common, "the tiny test set should give at least one label to compare"
    for g in rep["values"]:
        rows = torch.tensor([s == g for s in sex])
        ece = expected_calibration_error(probs[rows], target[rows], task="multilabel")
        assert rep["ece"][g] == pytest.approx(float(ece), abs=1e-6)
        tprs = []
        for k in common:
            known = rows & ~torch.isnan(target[:, k])
            ref = binary_sensitivity_at_specificity(probs[known, k], target[known, k].long(), 0.8)
            tprs.append(float(ref[0]))
        assert rep["tpr_at_specificity"][g] == pytest.approx(np.mean(tprs), abs=1e-6)
        logged = trainer.callback_metrics[f"test/chexpert/subgroup/sex/tpr_at_specificity/{g}"]
        assert float(logged) == pytest.approx(np.mean(tprs), abs=1e-6)
    gaps = []
    for k in common:
        _, t = tpr_at_specificity(probs[:, k], target[:, k], 0.8)
        compared = torch.tensor([s in rep["values"] for s in sex])
        kept = [s for s in sex if s in rep["values"]]
        gaps.append(equalized_odds_gap(probs[compared, k], target[compared, k], kept, t))
    assert rep["equalized_odds_gap"] == pytest.approx(np.mean(gaps), abs=1e-6)
    assert not math.isnan(rep["equalized_odds_gap"])
