"""Analysis callbacks in a real (tiny) fit: what they log and write, and resumable state."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from medxfer.callbacks import (
    CalibrationCallback,
    CKACallback,
    ConvergenceCallback,
    SubgroupCallback,
    WeightDriftCallback,
)
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
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
    assert summary["epochs_to_best"] == 3  # best after epoch 2: three epochs trained
    assert cb.results()["convergence/epochs_to_best"] == 3.0  # what results.json keeps
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


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "epoch", "step", "reports"),
    [
        pytest.param(-1, 20_000, 3, 5_000, False, id="steps-mid-run"),
        pytest.param(-1, 20_000, 4, 5_000, True, id="steps-every-5th-epoch"),
        pytest.param(-1, 20_000, 12, 20_000, True, id="steps-last-validation"),
        pytest.param(None, 20_000, 3, 5_000, False, id="steps-max-epochs-none"),
        pytest.param(10, -1, 3, 400, False, id="epochs-mid-run"),
        pytest.param(10, -1, 9, 1_000, True, id="epochs-last-epoch"),
        pytest.param(10, 500, 3, 500, True, id="max-steps-before-max-epochs"),
    ],
)
def test_every_n_epochs_reports_at_the_last_validation_only(
    max_epochs: int | None, max_steps: int, epoch: int, step: int, reports: bool
) -> None:
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        max_epochs=max_epochs,
        max_steps=max_steps,
        current_epoch=epoch,
        global_step=step,
    )
    callback = CalibrationCallback(every_n_epochs=5)
    assert callback._active(trainer, "val") is reports
    assert callback._active(trainer, "test")


def test_step_based_fit_reports_every_n_epochs_and_at_max_steps(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    """max_steps=6 at 2 batches an epoch: validations end epochs 0, 1, 2 (steps 2, 4, 6); with
    every_n_epochs=2 the callback reports in epoch 1 and at the last step only."""
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=8, num_workers=0
    )
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names
    )
    cal = CalibrationCallback(plot=False, every_n_epochs=2)
    reported = []
    original = cal.report

    def report(trainer, pl_module, prefix, metric) -> None:
        reported.append((trainer.current_epoch, trainer.global_step))
        original(trainer, pl_module, prefix, metric)

    cal.report = report
    trainer = tiny_trainer(
        max_epochs=-1, max_steps=6, limit_train_batches=2, limit_val_batches=1, callbacks=[cal]
    )
    trainer.fit(task, datamodule=dm)
    assert reported == [(1, 4), (2, 6)]


@pytest.mark.parametrize(
    ("include_unknown", "values"),
    [
        pytest.param(False, {"F": 0.75, "M": 0.5}, id="unknown-apart"),
        pytest.param(True, {"F": 0.75, "M": 0.5, "unknown": 1.0}, id="unknown-included"),
    ],
)
def test_subgroup_callback_passes_include_unknown(
    include_unknown: bool, values: dict[str, float]
) -> None:
    # top-1 right on cases 0, 1, 2, 4, 6, 7: F 3/4, M 1/2, unknown 2/2
    probs = torch.tensor(
        [
            [0.9, 0.1],
            [0.8, 0.2],
            [0.3, 0.7],
            [0.6, 0.4],
            [0.9, 0.1],
            [0.2, 0.8],
            [0.5, 0.4],
            [0.1, 0.9],
        ]
    )
    target = torch.eye(2)[[0, 0, 1, 1, 0, 0, 0, 1]]
    sex = ["F", "F", "F", "F", "M", "M", "unknown", "unknown"]
    callback = SubgroupCallback(["sex"], min_size=2, include_unknown=include_unknown)
    metric = callback.make_metric(SimpleNamespace(output_type="multiclass"))
    callback.update(metric, {"probs": probs, "target": target, "groups": {"sex": sex}})
    assert metric.compute()["sex"].values == values
