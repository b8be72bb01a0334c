"""The console of ``medxfer fit``: one progress line per epoch when no progress bar is drawn
(here: output captured, as in CI and SLURM logs), Lightning's tips and the known harmless
warnings filtered by message, and a real problem still warned about."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from medxfer.callbacks.progress import format_seconds
from medxfer.commands.lightning import HARMLESS_WARNINGS, quiet_console
from medxfer.datamodules.chest_xray import (
    write_synthetic_chexpert,
    write_synthetic_mimic,
    write_synthetic_nih,
    write_synthetic_padchest,
    write_synthetic_tuberculosis,
)

REPO = Path(__file__).resolve().parents[2]

#: What must not reach the console (each seen in a `make demo` log before the filters).
NOISE = [
    "💡 Tip",
    "litlogger",
    "litmodels",
    "LeafSpec",
    "is smaller than the logging interval",
    "does not have many workers",
]


def test_fit_console_has_a_line_per_epoch_and_no_noise_but_real_warnings(tmp_path: Path) -> None:
    train = write_synthetic_chexpert(tmp_path / "chexpert", n_patients=20, size=32, seed=0)
    nih = write_synthetic_nih(tmp_path / "nih", n_patients=4, size=32, seed=1)
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "limit_train_batches": 3,  # under log_every_n_steps (50): Lightning would warn
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "logger": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {  # a real problem: a metric that is never logged (warned, as verbose asks)
                    "class_path": "lightning.pytorch.callbacks.EarlyStopping",
                    "init_args": {"monitor": "val/never_logged", "strict": False, "verbose": True},
                },
            ],
        },
        "model": {
            "class_path": "MultiLabelClassifier",
            "init_args": {"backbone": "timm/test_resnet"},
        },
        "data": {
            "class_path": "ChestXrayDataModule",
            "init_args": {
                "train": {"csv": str(train)},
                "shifted": {"nih": {"csv": str(nih), "format": "nih"}},
                "image_size": 32,
                "batch_size": 8,
                "num_workers": 0,
            },
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "medxfer", "fit", "-c", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    for noise in NOISE:
        assert noise not in console, noise
    assert "Early stopping conditioned on metric `val/never_logged`" in console
    progress = [line for line in out.stderr.splitlines() if line.startswith("medxfer: epoch ")]
    # 3 steps per epoch; the monitored metric defaults to val/loss (no ModelCheckpoint monitor)
    pattern = r"medxfer: epoch (\d)/2  step (\d)  train/loss \d\.\d+  val/loss \d\.\d+  \d+ s"
    matches = [re.fullmatch(pattern, line) for line in progress]
    assert all(matches) and len(matches) == 2, progress
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "3"), ("2", "6")]
    # the progress bar is off when the console is not a terminal
    assert "\r" not in out.stdout


@pytest.mark.parametrize("message", HARMLESS_WARNINGS)
def test_quiet_console_filters_by_message_only(message: str) -> None:
    example = {
        HARMLESS_WARNINGS[0]: "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
        HARMLESS_WARNINGS[1]: "The number of training batches (3) is smaller than the logging "
        "interval Trainer(log_every_n_steps=50).",
    }[message]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_console()
        warnings.warn(example, UserWarning, stacklevel=1)
        warnings.warn("The number of validation batches is zero", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["The number of validation batches is zero"]


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.4, 59.6, 61, 3599, 3661)] == [
        "0 s",
        "1 min 00 s",
        "1 min 01 s",
        "59 min 59 s",
        "1 h 01 min",
    ]


def test_demo_says_what_it_runs_its_progress_and_what_to_run_next(tmp_path: Path) -> None:
    """``make demo``'s module on small data written beforehand (the demo then skips writing
    its own), with tiny settings passed through to ``medxfer fit``."""
    data = tmp_path / "data/synthetic"
    write_synthetic_chexpert(data / "chexpert", n_patients=20, size=32, seed=0)
    write_synthetic_nih(data / "nih", n_patients=4, size=32, seed=1)
    tiny = [
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--model.init_args.backbone=timm/test_resnet",
        "--data.init_args.image_size=32",
        "--data.init_args.num_workers=0",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "medxfer.commands.demo", *tiny],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    epochs = [line for line in out.stderr.splitlines() if line.startswith("medxfer: epoch ")]
    assert [line.split("  ")[0] for line in epochs] == ["medxfer: epoch 1/2", "medxfer: epoch 2/2"]
    (results,) = (tmp_path / "runs/chexpert_demo").glob("**/results.json")
    run = results.parent.relative_to(tmp_path)
    lines = out.stdout.splitlines()
    assert any(line.startswith(f"[demo] run folder: {run} ") for line in lines), out.stdout
    (ckpt,) = (tmp_path / run / "checkpoints").glob("best-*.ckpt")
    predict = f"next: medxfer predict -c {REPO / 'configs/chexpert_demo.yaml'} --ckpt_path "
    assert any(line.startswith(predict + str(ckpt.relative_to(tmp_path))) for line in lines)
    assert any("medxfer study run studies/demo.yaml" in line for line in lines)


@pytest.mark.slow
def test_pretrain_demo_pretrains_exports_fine_tunes_and_reports(tmp_path: Path) -> None:
    """``make demo-pretrain`` end to end on small data written beforehand: the pre-training
    (tiny settings passed through), the export, the random-vs-continual study and its report;
    the continual replicas start from the export, the random ones from nothing."""
    data = tmp_path / "data/synthetic"
    write_synthetic_chexpert(data / "chexpert", n_patients=24, size=32, seed=0)
    write_synthetic_nih(data / "nih", n_patients=12, size=32, seed=1)
    write_synthetic_mimic(data / "mimic", n_patients=24, size=32, seed=2)
    write_synthetic_padchest(data / "padchest", 24, size=32, seed=3)
    for folder, collection in (("montgomery_tb", "MCUCXR"), ("shenzhen_tb", "CHNCXR")):
        write_synthetic_tuberculosis(data / folder, 30, size=32, seed=4, collection=collection)
    tiny = [
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=1",
        "--data.init_args.num_workers=0",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "medxfer.commands.demo", "pretrain", *tiny],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (tmp_path / "cxr_demo.safetensors").is_file()
    study = tmp_path / "studies/pretrain_demo"
    for init, want in (("random", None), ("continual", "cxr_demo.safetensors")):
        for seed in (0, 1):
            config = yaml.safe_load((study / init / f"seed{seed}" / "config.yaml").read_text())
            assert config["model"]["init_args"]["pretrained"] == want
    report = (study / "report" / "report.md").read_text()
    assert "random" in report and "continual" in report
    assert "random vs continual" in out.stdout
