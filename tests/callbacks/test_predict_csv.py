"""``medxfer predict`` writes ``predictions/<set>.csv`` for every task: one row per case, its
keyed (or source) id, then one probability per label / class -- checked against sigmoid /
softmax of the model's logits recomputed here on the same images (a segmenter: the mean
per-pixel probability inside the field of view, recomputed in NumPy)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from medxfer.callbacks import PredictionWriter
from medxfer.commands.lightning import build_cli
from medxfer.datamodules.chest_xray import (
    ChestXrayDataModule,
    CXRTable,
    write_synthetic_chexpert,
    write_synthetic_nih,
)
from medxfer.datamodules.dermatology import DermatologyDataModule, write_synthetic_derm
from medxfer.datamodules.mammography import MammographyDataModule, write_synthetic_mammo
from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_drive
from medxfer.tasks import CaseClassifier, MultiLabelClassifier, MultiViewClassifier, Segmenter


def _read_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The header and ``{id: probabilities}`` of a predictions CSV."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: np.array([float(v) for v in r[1:]]) for r in rows[1:]}


def _expected(task: L.LightningModule, loader, activation, valid_mean: bool = False) -> dict:
    """``{source id: probabilities}`` recomputed from the model's logits on the loader's batches
    (normalised as the trainer does, :meth:`on_after_batch_transfer`)."""
    out = {}
    with torch.no_grad():
        for batch in loader:
            logits = task(task.on_after_batch_transfer(batch, 0)).float()
            probs = activation(logits).numpy()
            if valid_mean:  # (B, K, H, W): mean over the field of view, in NumPy
                valid = batch["valid"].numpy()[:, None]
                probs = (probs * valid).sum((2, 3)) / valid.sum((2, 3))
            out.update(dict(zip(batch["id"], probs, strict=True)))
    return out


def test_medxfer_predict_writes_keyed_per_case_probabilities(tmp_path: Path) -> None:
    """The command, in a subprocess, on a multi-label classifier's checkpoint: before this
    change it exited 0 and wrote nothing."""
    train = write_synthetic_chexpert(tmp_path / "chexpert", n_patients=20, size=32, seed=0)
    nih = write_synthetic_nih(tmp_path / "nih", n_patients=6, size=32, seed=1)
    dm_args = {"image_size": 32, "batch_size": 8, "num_workers": 0}
    run = tmp_path / "run"
    config = {
        "trainer": {"accelerator": "cpu", "logger": False, "default_root_dir": str(run)},
        "model": {
            "class_path": "MultiLabelClassifier",
            "init_args": {"backbone": "timm/test_resnet"},
        },
        "data": {
            "class_path": "ChestXrayDataModule",
            "init_args": {
                "train": {"csv": str(train)},
                "shifted": {"nih": {"csv": str(nih), "format": "nih"}},
                **dm_args,
            },
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    fit = [
        "fit",
        "-c",
        str(tmp_path / "cfg.yaml"),
        "--trainer.max_steps=1",
        "--test_after_fit=false",
    ]
    build_cli([*fit, "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"])
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    out = subprocess.run(
        [sys.executable, "-m", "medxfer", "predict", "-c", str(tmp_path / "cfg.yaml"),
         f"--ckpt_path={ckpt}"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    model = MultiLabelClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    key = bytes.fromhex((run / "id_key").read_text().strip())
    dm = ChestXrayDataModule(
        CXRTable(str(train)), shifted={"nih": CXRTable(str(nih), format="nih")}, **dm_args
    )
    dm.setup("predict")
    assert sorted(p.name for p in (run / "predictions").glob("*.csv")) == [
        "chexpert.csv",
        "nih.csv",
    ]
    for name, loader in zip(dm.eval_names, dm.predict_dataloader(), strict=True):
        header, written = _read_csv(run / "predictions" / f"{name}.csv")
        assert header == ["id", *dm.label_names]
        expected = _expected(model, loader, torch.sigmoid)
        keyed = {
            hmac.new(key, i.encode(), hashlib.sha256).hexdigest()[:20]: p
            for i, p in expected.items()
        }
        assert set(written) == set(keyed) and len(written) == len(dm.test_sets[name])
        for case, probs in keyed.items():
            np.testing.assert_allclose(written[case], probs, rtol=0, atol=1e-6)
    assert f"predictions of {len(dm.test_sets['nih'])} cases written to" in out.stdout


def _derm(root: Path) -> tuple[L.LightningModule, L.LightningDataModule, object, bool]:
    dm = DermatologyDataModule(
        str(write_synthetic_derm(root, n_cases=30, size=32, seed=0)),
        n_conditions=4, image_size=32, batch_size=4, num_workers=0, augment=False,
    )  # fmt: skip
    dm.setup("predict")
    task = CaseClassifier(
        backbone="timm/test_resnet", num_classes=dm.num_classes, label_names=dm.label_names
    )
    return task, dm, lambda z: torch.softmax(z, 1), False


def _mammo(root: Path) -> tuple[L.LightningModule, L.LightningDataModule, object, bool]:
    dm = MammographyDataModule(
        str(write_synthetic_mammo(root, n_exams=24, size=32, seed=0)),
        image_size=32, batch_size=4, num_workers=0,
    )  # fmt: skip
    dm.setup("predict")
    task = MultiViewClassifier(
        backbone="timm/test_resnet", num_classes=dm.num_classes, label_names=dm.label_names
    )
    return task, dm, torch.sigmoid, False


def _drive(root: Path) -> tuple[L.LightningModule, L.LightningDataModule, object, bool]:
    drive = write_synthetic_drive(root, 6, 3, size=32, seed=0)
    dm = SegmentationDataModule(
        str(drive / "training"), layout="drive", test=str(drive / "test"),
        image_size=32, batch_size=2, num_workers=0, augment=False, split=(0.8, 0.2, 0.0),
    )  # fmt: skip
    dm.setup("predict")
    task = Segmenter(
        backbone="timm/resnet18", num_classes=1, label_names=["vessel"],
        decoder_channels=(16, 8, 8, 8, 8),
    )  # fmt: skip
    return task, dm, torch.sigmoid, True


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_derm, id="case-classifier-softmax"),
        pytest.param(_mammo, id="multi-view-sigmoid"),
        pytest.param(_drive, id="segmenter-mean-in-field-of-view"),
    ],
)
def test_prediction_csv_of_every_task_equals_recomputed_probabilities(
    make, tmp_path: Path, tiny_trainer
) -> None:
    torch.manual_seed(0)
    task, dm, activation, per_pixel = make(tmp_path / "data")
    task.eval()
    trainer = tiny_trainer(callbacks=[PredictionWriter(source_ids=True)], limit_predict_batches=2)
    trainer.predict(task, datamodule=dm, return_predictions=False)
    for name, loader in zip(dm.eval_names, dm.predict_dataloader(), strict=True):
        header, written = _read_csv(tmp_path / "predictions" / f"{name}.csv")
        assert header == ["id", *task.label_names]
        batches = [b for _, b in zip(range(2), loader, strict=False)]
        expected = _expected(task, batches, activation, per_pixel)
        assert set(written) == set(expected)
        for case, probs in expected.items():
            np.testing.assert_allclose(written[case], probs, rtol=0, atol=1e-6)
        if per_pixel:  # the field of view matters: the plain image mean differs
            assert any((b["valid"] == 0).any() for b in batches)
