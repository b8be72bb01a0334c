"""Analysis callbacks in a real (tiny) fit: what they log and write, and resumable state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medxfer.callbacks import (
    CalibrationCallback,
    CKACallback,
    ConvergenceCallback,
    SubgroupCallback,
    WeightDriftCallback,
)
from medxfer.datamodules import ChestXrayDataModule, CXRTable
from medxfer.tasks import MultiLabelClassifier


@pytest.fixture
def fitted(synthetic_cxr: dict[str, Path], tiny_trainer, tmp_path: Path):
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=8, num_workers=0
    )
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names, lr=0.05
    )
    callbacks = [
        CalibrationCallback(),
        SubgroupCallback(min_size=5),
        CKACallback(probe_size=24, batch_size=8),
        WeightDriftCallback(),
        ConvergenceCallback(),
    ]
    trainer = tiny_trainer(
        max_steps=-1, max_epochs=2, limit_train_batches=3, limit_val_batches=3, callbacks=callbacks
    )
    trainer.fit(task, datamodule=dm)
    return trainer, callbacks, tmp_path / "analysis"


def test_callbacks_write_their_results(fitted) -> None:
    trainer, _, out = fitted
    names = {p.name for p in out.iterdir()}
    assert {
        "calibration_val.json",
        "reliability_val.png",
        "subgroups_val.json",
        "cka.json",
        "cka_vs_depth.png",
        "weight_drift.json",
        "drift_per_block.png",
        "convergence.json",
    } <= names
    metrics = trainer.callback_metrics
    assert 0 <= metrics["val/ece"] <= 1 and "val/ece/Edema" in metrics
    assert "val/subgroup/sex/gap" in metrics and "val/subgroup/age/worst" in metrics
    cka = json.loads((out / "cka.json").read_text())["history"]
    assert [h["when"] for h in cka] == ["start", "epoch", "epoch", "end"]
    assert all(
        v == pytest.approx(1.0, abs=1e-5) for v in cka[0]["cka"].values()
    )  # initial vs itself
    assert cka[-1]["cka"]["layer4"] < 0.999  # training moved the deepest stage
    drift = json.loads((out / "weight_drift.json").read_text())["history"]
    assert drift[-1]["drift"]["stage/layer4"]["l1"] > 0 and "drift/l1/layer4" in metrics
    conv = json.loads((out / "convergence.json").read_text())
    assert conv["best"] == max(h["value"] for h in conv["history"])
    subgroups = json.loads((out / "subgroups_val.json").read_text())["attributes"]
    assert set(subgroups) == {"age", "sex", "view"}


def test_convergence_state_survives_a_checkpoint() -> None:
    cb = ConvergenceCallback(monitor="val/auroc_mean", fraction=0.9)
    cb.history = [(10, 0, 0.5), (20, 1, 0.86), (30, 2, 0.95), (40, 3, 0.94)]
    summary = cb.summary()
    assert (summary["best_step"], summary["step_at_fraction"]) == (30, 20)  # 0.86 >= 0.9 * 0.95
    fresh = ConvergenceCallback(monitor="val/auroc_mean", fraction=0.9)
    fresh.load_state_dict(cb.state_dict())
    assert fresh.summary() == summary


def test_cka_rejects_tiny_minibatches() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        CKACallback(batch_size=2)


def test_calibration_is_computed_in_float32_under_bf16(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=8, num_workers=0
    )
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names
    )
    cal = CalibrationCallback(plot=False)
    seen = []
    original = cal.update
    cal.update = lambda metric, outputs: (
        seen.append(outputs["probs"].dtype),
        original(metric, outputs),
    )[1]
    trainer = tiny_trainer(
        precision="bf16-mixed", callbacks=[cal], max_steps=1, val_check_interval=1
    )
    trainer.fit(task, datamodule=dm)
    assert seen and all(d == torch.float32 for d in seen)
