"""Studies end to end: replicas into a study folder (resumable), then the report's tables and
plots, with bootstrap intervals, data-efficiency matching and the t-test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medxfer import artifacts
from medxfer.commands.lightning import build_cli
from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih
from medxfer.metrics import bootstrap_ci
from medxfer.report import _matching_fraction, build_report, find_runs
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
    artifacts.case_id_key(base / "study")  # as run_study: one case-id key for the replicas
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


def sklearn_replica_interval(
    probs: list[np.ndarray], target: np.ndarray, n_resamples: int, seed: int = 0
) -> tuple[float, float, float]:
    """The replicas' mean AUROC (each the mean over labels of scikit-learn's AUROC on the known
    cases) on all cases, and its 95 % percentile interval over the resamples drawn explicitly
    as ``default_rng(seed).integers(0, n, size=(n_resamples, n))``, shared by all replicas."""
    n = len(target)

    def mean_auroc(rows: np.ndarray) -> float:
        per_replica = []
        for p in probs:
            per_label = []
            for k in range(target.shape[1]):
                t, s = target[rows, k], p[rows, k]
                known = ~np.isnan(t)
                if len(np.unique(t[known])) == 2:
                    per_label.append(roc_auc_score(t[known], s[known]))
            per_replica.append(np.mean(per_label) if per_label else np.nan)
        return float(np.mean(per_replica))

    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    samples = [mean_auroc(rows) for rows in draws]
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return mean_auroc(np.arange(n)), float(low), float(high)


def test_replica_interval_is_that_of_the_mean(study: Path) -> None:
    a, b = (
        np.load(study / "test_resnet_f1.0" / f"seed{s}" / "analysis" / "predictions_nih.npz")
        for s in (0, 1)
    )
    assert np.array_equal(a["id"], b["id"])
    ci = bootstrap_ci(np.stack([a["probs"], b["probs"]]), a["target"], n_resamples=200)
    point, low, high = sklearn_replica_interval([a["probs"], b["probs"]], a["target"], 200)
    assert (ci.value, ci.low, ci.high) == pytest.approx((point, low, high), abs=1e-12)
    assert low <= point <= high


def test_replica_accuracy_is_the_mean_of_the_replicas() -> None:
    target = np.eye(2)[[0, 1, 1, 0]]
    right_3 = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])  # 3 of 4 right
    right_1 = np.array([[0.4, 0.6], [0.6, 0.4], [0.3, 0.7], [0.3, 0.7]])  # 1 of 4 right
    ci = bootstrap_ci(np.stack([right_3, right_1]), target, "accuracy", n_resamples=50)
    assert ci.value == pytest.approx((3 / 4 + 1 / 4) / 2)


@pytest.mark.parametrize(
    ("probs_shape", "target_shape", "metric", "message"),
    [
        pytest.param(
            (3, 5, 2),
            (5, 3),
            "auroc",
            r"probs \(3, 5, 2\) do not match target \(5, 3\)",
            id="shape",
        ),
        pytest.param((5,), (5,), "accuracy", r"accuracy needs \(n, K\)", id="accuracy-1d"),
    ],
)
def test_bootstrap_names_bad_shapes(
    probs_shape: tuple, target_shape: tuple, metric: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(np.zeros(probs_shape), np.zeros(target_shape), metric)


def _write_run(folder: Path, auroc_mean: float | None, predictions: dict | None) -> None:
    """A finished replica as medxfer fit leaves it: results.json and, optionally, the test
    set's per-case predictions (``analysis/predictions_ext.npz``)."""
    (folder / "analysis").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"test/ext/auroc_mean": auroc_mean}))
    if predictions is not None:
        np.savez(folder / "analysis" / "predictions_ext.npz", **predictions)


def test_report_interval_and_missing_artifacts(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 40
    target = (rng.random((n, 2)) < 0.4).astype(np.float32)
    target[rng.random((n, 2)) < 0.15] = np.nan
    ids = np.array([f"case{i}" for i in range(n)])
    probs = [np.clip(np.nan_to_num(target) * 0.3 + rng.random((n, 2)), 0, 1) for _ in range(2)]
    study = tmp_path / "study"
    for seed, p in enumerate(probs):
        _write_run(study / "a" / f"seed{seed}", 0.5, {"probs": p, "target": target, "id": ids})
    _write_run(study / "b" / "seed0", 0.7, {"probs": probs[0], "target": target, "id": ids})
    _write_run(study / "b" / "seed1", 0.8, None)  # no per-case predictions
    (study / "b" / "seed2").mkdir()  # unfinished: no results.json
    text = build_report(study, n_resamples=300).read_text()
    point, low, high = sklearn_replica_interval(probs, target, 300)
    assert f"| a | ? | none | 1 | ext | 2 | {point:.3f} [{low:.3f}, {high:.3f}] |" in text
    assert (
        "| b | ? | none | 1 | ext | 2 | 0.750 (no interval: per-case predictions missing) |" in text
    )
    assert "## Missing artifacts" in text
    assert "- `b/seed1` lacks `analysis/predictions_ext.npz`" in text
    assert "- `b/seed2` lacks `results.json`" in text
    assert "a/seed" not in text.split("## Missing artifacts")[1].split("##")[0]


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
