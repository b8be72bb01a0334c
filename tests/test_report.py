"""Studies end to end: replicas into a study folder (resumable), then the report's tables and
plots, with bootstrap intervals, data-efficiency matching and the t-test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medxfer.cli import build_cli
from medxfer.datamodules import write_synthetic_chexpert, write_synthetic_nih
from medxfer.report import _matching_fraction, build_report, find_runs, replica_auroc_ci
from medxfer.study import replica_command

REPO = Path(__file__).resolve().parents[1]
ANALYSES = """
trainer:
  callbacks:
    - class_path: medxfer.callbacks.CalibrationCallback
    - class_path: medxfer.callbacks.SubgroupCallback
      init_args: {min_size: 5}
    - class_path: medxfer.callbacks.CKACallback
      init_args: {probe_size: 16, batch_size: 8}
    - class_path: medxfer.callbacks.WeightDriftCallback
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 backbones x 2 training fractions x 2 seeds on synthetic chest X-rays, run in-process
    with exactly the replica command of ``medxfer study``."""
    base = tmp_path_factory.mktemp("study")
    write_synthetic_chexpert(base / "data/synthetic/chexpert", n_patients=40, size=32, seed=0)
    write_synthetic_nih(base / "data/synthetic/nih", n_patients=10, size=32, seed=1)
    (base / "analyses.yaml").write_text(ANALYSES)
    cwd = os.getcwd()
    os.chdir(base)
    try:
        for backbone in ("timm/test_resnet", "timm/test_efficientnet"):
            for fraction in (0.5, 1.0):
                name = f"{backbone.split('/')[1]}_f{fraction}"
                for seed in (0, 1):
                    extra = [
                        f"--model.init_args.backbone={backbone}",
                        f"--data.init_args.train_fraction={fraction}",
                        "--data.init_args.image_size=32",
                        "--trainer.max_steps=3",
                    ]
                    cmd = replica_command(
                        [str(REPO / "configs/tiny.yaml"), str(base / "analyses.yaml")],
                        base / "study" / name / f"seed{seed}",
                        seed,
                        extra,
                    )
                    assert cmd[1:4] == ["-m", "medxfer", "fit"]
                    build_cli(cmd[3:])  # "fit ...", in this process
    finally:
        os.chdir(cwd)
    return base / "study"


def test_report_renders_every_table_and_plot(study: Path) -> None:
    runs = find_runs(study)
    assert len(runs) == 8 and {r.fraction for r in runs} == {0.5, 1.0}
    md = build_report(
        study,
        baseline="test_resnet_f1.0",
        compare=["test_resnet_f1.0", "test_efficientnet_f1.0"],
        n_resamples=200,
    )
    text = md.read_text()
    for heading in (
        "## Performance",
        "## Data efficiency",
        "## Subgroups",
        "## Feature reuse",
        "## test_resnet_f1.0 vs test_efficientnet_f1.0",
    ):
        assert heading in text
    for png in (
        "data_efficiency.png",
        "subgroup_gaps.png",
        "cka_vs_depth.png",
        "drift_per_block.png",
    ):
        assert (md.parent / png).stat().st_size > 1000
    assert "matching fraction" in text and text.count("| chexpert |") >= 4
    html = md.with_suffix(".html").read_text()
    assert "<table>" in html and 'src="cka_vs_depth.png"' in html


def test_replica_interval_is_that_of_the_mean(study: Path) -> None:
    a, b = (
        np.load(study / "test_resnet_f1.0" / f"seed{s}" / "analysis" / "predictions_nih.npz")
        for s in (0, 1)
    )
    assert np.array_equal(a["id"], b["id"])
    point, low, high = replica_auroc_ci([a["probs"], b["probs"]], a["target"], n_resamples=500)
    single = [
        replica_auroc_ci([p], a["target"], n_resamples=10)[0] for p in (a["probs"], b["probs"])
    ]
    assert point == pytest.approx(np.mean(single)) and low <= point <= high


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        pytest.param([0.7, 0.8, 0.9], 0.8, 0.2, id="on-a-point"),
        pytest.param([0.7, 0.8, 0.9], 0.85, 0.35, id="interpolated"),
        pytest.param([0.7, 0.8, 0.9], 0.95, None, id="never"),
    ],
)
def test_matching_fraction(values: list[float], target: float, expected: float | None) -> None:
    got = _matching_fraction([0.1, 0.2, 0.5], values, target)
    assert got == (None if expected is None else pytest.approx(expected))


def test_study_command_is_resumable(tmp_path: Path) -> None:
    write_synthetic_chexpert(tmp_path / "data/synthetic/chexpert", n_patients=30, size=32, seed=0)
    write_synthetic_nih(tmp_path / "data/synthetic/nih", n_patients=6, size=32, seed=1)
    cmd = [
        sys.executable,
        "-m",
        "medxfer",
        "study",
        "-c",
        str(REPO / "configs/tiny.yaml"),
        "--out",
        "st",
        "--name",
        "r",
        "--seeds",
        "3",
        "--",
        "--model.init_args.backbone=timm/test_resnet",
        "--data.init_args.image_size=32",
    ]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "st/r/seed3/results.json").is_file() and (
        tmp_path / "st/r/seed3/analysis/predictions_nih.npz"
    ).is_file()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "seed 3: done, skipped" in again.stdout
