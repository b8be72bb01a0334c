"""Studies end to end: replicas into a study folder (resumable), then the report's tables and
plots, with bootstrap intervals, data-efficiency matching and the t-test; each section of the
report on a hand-made study folder, and its HTML rendering."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import yaml
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from medxfer import artifacts, plots
from medxfer.commands.lightning import build_cli
from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih
from medxfer.metrics import bootstrap_ci
from medxfer.report import (
    StudyRuns,
    _matching_fraction,
    baseline_section,
    best_section,
    build_report,
    comparison_section,
    convergence_section,
    data_efficiency_section,
    default_metrics,
    feature_reuse_section,
    find_runs,
    layout_section,
    metric_cells,
    missing_section,
    parse_layout,
    performance_section,
    read_reference,
    reference_section,
    render_html,
    subgroups_section,
    summary_section,
    two_sample_test,
)
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
                axes = {"init": backbone.split("/")[1], "fraction": str(fraction)}
                (base / "study" / name / "axes.json").write_text(json.dumps(axes))
    finally:
        os.chdir(cwd)
    return base / "study"


def test_report_renders_every_table_and_plot(study: Path, tmp_path: Path) -> None:
    runs = find_runs(study)
    assert len(runs) == 8 and {r.fraction for r in runs} == {0.5, 1.0}
    assert runs[0].axes == {"init": "test_efficientnet", "fraction": "0.5"}
    reference = tmp_path / "published.csv"
    reference.write_text(
        "init,fraction,set,seed,metric,value\n"
        + "".join(f"test_resnet,1,nih,{k},auroc_mean,{v}\n" for k, v in enumerate([0.5, 0.6]))
    )
    md = build_report(
        study,
        baseline="test_resnet_f1.0",
        compare=["test_resnet_f1.0", "test_efficientnet_f1.0"],
        n_resamples=200,
        layout="init:fraction:set",
        reference=reference,
    )
    text = md.read_text()
    for heading in (
        "## Performance",
        "## Best against every other configuration",
        "## Grid",
        "### auroc_mean: set=nih",
        "## Against published replicas",
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
    # every replica stored its resamples at test time: intervals for AUROC, ECE and top-1
    assert (study / "test_resnet_f1.0" / "seed0" / "analysis" / "bootstrap_nih.npz").is_file()
    assert "no interval" not in text
    assert "| init=test_resnet, fraction=1 | test_resnet_f1.0 | nih | auroc_mean |" in text
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
    # the resamples index the cases in the order of their ids: case0, case1, case10, ...
    order = np.argsort(ids)
    _, low, high = sklearn_replica_interval([p[order] for p in probs], target[order], 300)
    assert f"| a | ? | none | 1 | ext | 2 | 0.500 ± 0.000 [{low:.3f}, {high:.3f}] |" in text
    no_interval = "(no interval: per-case predictions missing)"
    assert f"| b | ? | none | 1 | ext | 2 | 0.750 ± 0.071 {no_interval} |" in text
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
    """A one-config study file (seed 3): the replica runs, writes its results and per-case
    predictions, the console says what ran, where its progress is and what to run next, and a
    second run skips it."""
    write_synthetic_chexpert(tmp_path / "data/synthetic/chexpert", n_patients=30, size=32, seed=0)
    write_synthetic_nih(tmp_path / "data/synthetic/nih", n_patients=6, size=32, seed=1)
    study = {
        "out": "st",
        "base": [str(REPO / "configs/tiny.yaml")],
        "overrides": {
            "model.init_args.backbone": "timm/test_resnet",
            "data.init_args.image_size": 32,
        },
        "seeds": [3],
        "name": "r",
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "medxfer", "study", "run", "study.yaml"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "st/r/seed3/results.json").is_file() and (
        tmp_path / "st/r/seed3/analysis/predictions_nih.npz"
    ).is_file()
    lines = first.stdout.splitlines()
    assert any(
        line.startswith("[study] r/seed3: ") and "progress in st/r/seed3/log.txt" in line
        for line in lines
    ), first.stdout
    assert any(line.startswith("[study] r/seed3: done in") for line in lines), first.stdout
    assert any(line.startswith("next: medxfer report st") for line in lines), first.stdout
    assert (
        "medxfer: epoch 1  step 4/4  train/loss " in (tmp_path / "st/r/seed3/log.txt").read_text()
    )
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "[study] r/seed3: done, skipped" in again.stdout, again.stdout


# Each section on a hand-made study folder ----------------------------------------------------
# The folders are spelled here as the documented layout (``<name>/seed<k>/results.json``,
# ``analysis/...``, ``test/<set>/<metric>``), not through medxfer.artifacts: the report must
# read what the writers are documented to write.


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the report closes, kept open for inspection."""
    kept: list[Figure] = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    return kept


def _replica(
    study: Path,
    name: str,
    seed: int,
    results: dict[str, float | None],
    backbone: str = "r50",
    fraction: float = 1.0,
    analysis: dict[str, object] | None = None,
) -> Path:
    """A finished replica: results.json, config.yaml as LightningCLI saves it, and JSON files
    in ``analysis/``."""
    folder = study / name / f"seed{seed}"
    (folder / "analysis").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    config = {
        "model": {"init_args": {"backbone": backbone, "pretrained": None}},
        "data": {"init_args": {"train_fraction": fraction}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    for file, data in (analysis or {}).items():
        (folder / "analysis" / file).write_text(json.dumps(data))
    return folder


def test_find_runs_reads_replica_folders_only(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 12, {"test/ext/auroc_mean": 0.5}, backbone="vit", fraction=0.25)
    _replica(tmp_path, "a", 0, {"test/ext/auroc_mean": None})
    (tmp_path / "a" / "seeds").mkdir()  # not a replica folder, even with results in it
    (tmp_path / "a" / "seeds" / "results.json").write_text("{}")
    (tmp_path / "report" / "seed1").mkdir(parents=True)  # unfinished: no results.json
    runs = find_runs(tmp_path)
    assert [(r.name, r.seed, r.backbone, r.pretrained, r.fraction) for r in runs] == [
        ("a", 0, "r50", "none", 1.0),
        ("a", 12, "vit", "none", 0.25),
    ]
    assert math.isnan(runs[0].results["test/ext/auroc_mean"])  # null -> NaN
    assert runs[1].analysis == tmp_path / "a" / "seed12" / "analysis"


def test_find_runs_names_the_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "a" / "seed0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no finished runs .*<name>/seed<k>/results\.json"):
        find_runs(tmp_path)


def test_summary_and_performance_sections(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 0, {"test/ext/auroc_mean": 0.6, "test/ext/ece": 0.1})
    _replica(
        tmp_path, "a", 1, {"test/ext/auroc_mean": 0.8, "test/ext/ece": 0.3, "test/ext/top1": 0.5}
    )
    _replica(tmp_path, "b", 0, {"test/ext/auroc_mean": None, "test/int/auroc_mean": 0.9})
    study = StudyRuns.read(tmp_path)
    assert study.sets == ["ext", "int"] and list(study.by_name) == ["a", "b"]
    assert study.sets_of == {"a": ["ext"], "b": ["ext", "int"]}
    assert summary_section(study) == [
        f"# Study report: {tmp_path.name}",
        "",
        "3 runs, 2 configurations, test sets: ext, int.",
        "",
    ]
    metrics = ["auroc_mean", "ece", "top1"]
    lines = performance_section(study, metric_cells(study, metrics, 10), metrics, 10)
    no_interval = "(no interval: per-case predictions missing)"
    # mean ± sample std over replicas: AUROC 0.7 ± 0.1414, ECE 0.2 ± 0.1414; top-1 of the one
    # replica that logged it; nothing logged: n/a; a is not scored on int: no row
    assert (
        f"| a | r50 | none | 1 | ext | 2 | 0.700 ± 0.141 {no_interval} "
        f"| 0.200 ± 0.141 {no_interval} | 0.500 {no_interval} |" in lines
    )
    assert not any(line.startswith("| a | r50 | none | 1 | int |") for line in lines)
    assert "| b | r50 | none | 1 | ext | 1 | n/a | n/a | n/a |" in lines
    assert f"| b | r50 | none | 1 | int | 1 | 0.900 {no_interval} | n/a | n/a |" in lines
    assert lines[0] == "## Performance" and "(10 resamples" in lines[2]


def _curves_study(root: Path) -> StudyRuns:
    """r50 at 10 % (AUROC 0.7) and 50 % (0.9) of the training data; vit, the baseline, at
    100 % (0.8)."""
    _replica(root, "r_f0.1", 0, {"test/ext/auroc_mean": 0.7}, fraction=0.1)
    _replica(root, "r_f0.5", 0, {"test/ext/auroc_mean": 0.9}, fraction=0.5)
    _replica(root, "v", 0, {"test/ext/auroc_mean": 0.8}, backbone="vit")
    return StudyRuns.read(root)


def test_data_efficiency_section_draws_one_curve_per_backbone(
    tmp_path: Path, figures: list[Figure]
) -> None:
    study = _curves_study(tmp_path / "study")
    out = tmp_path / "out"
    lines = data_efficiency_section(study, metric_cells(study, ["auroc_mean"], 10), out)
    assert lines == ["## Data efficiency", "", "![data efficiency](data_efficiency.png)", ""]
    assert (out / "data_efficiency.png").stat().st_size > 1000
    (ax,) = figures[0].axes
    curves = {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
    }
    assert curves == {"r50 (none)": ([0.1, 0.5], [0.7, 0.9]), "vit (none)": ([1.0], [0.8])}


def test_baseline_section_interpolates_the_matching_fraction(tmp_path: Path) -> None:
    study = _curves_study(tmp_path)
    lines = baseline_section(study, metric_cells(study, ["auroc_mean"], 10), "v")
    # r50 reaches 0.8 halfway from (0.1, 0.7) to (0.5, 0.9): 0.1 + 0.5 * 0.4 = 0.3
    assert "| ext | r50 (none) | 0.800 | 0.3 |" in lines
    assert "| ext | vit (none) | 0.800 | 1 |" in lines
    assert baseline_section(study, metric_cells(study, ["auroc_mean"], 10), None) == []


def test_data_efficiency_needs_two_fractions_of_one_backbone(tmp_path: Path) -> None:
    _replica(tmp_path / "study", "r", 0, {"test/ext/auroc_mean": 0.7}, fraction=0.1)
    _replica(tmp_path / "study", "v", 0, {"test/ext/auroc_mean": 0.8}, backbone="vit")
    study = StudyRuns.read(tmp_path / "study")
    cells = metric_cells(study, ["auroc_mean"], 10)
    assert data_efficiency_section(study, cells, tmp_path / "out") == []
    assert baseline_section(study, cells, "v") == []
    assert not (tmp_path / "out").exists()


def _subgroups(gap: float | None, worst: float, too_small: list[str], unknown: dict) -> dict:
    report = {"values": {}, "gap": gap, "worst": worst, "too_small": too_small, "unknown": unknown}
    return {"epoch": 0, "metric": "auroc", "min_size": 5, "attributes": {"sex": report}}


def test_subgroups_section_averages_the_replicas(tmp_path: Path, figures: list[Figure]) -> None:
    file = "subgroups_test_ext.json"
    results = {"test/ext/auroc_mean": 0.7}
    _replica(tmp_path, "a", 0, results, analysis={file: _subgroups(0.1, 0.6, ["X"], {})})
    _replica(tmp_path, "a", 1, results, analysis={file: _subgroups(0.3, 0.8, [], {"?": 0.5})})
    _replica(tmp_path, "b", 0, results, analysis={file: _subgroups(None, 0.5, ["Y|Z"], {})})
    _replica(tmp_path, "c", 0, results)  # no subgroup file: no row
    lines = subgroups_section(StudyRuns.read(tmp_path), tmp_path / "out")
    assert lines[0] == "## Subgroups"
    assert "| a | ext | sex | 0.200 | 0.700 | X | ? |" in lines  # (0.1 + 0.3) / 2, (0.6 + 0.8) / 2
    assert "| b | ext | sex | n/a | 0.500 | Y\\|Z | - |" in lines  # a | in a name stays in its cell
    assert not any(line.startswith("| c |") for line in lines)
    assert lines[-2:] == ["![subgroup gaps](subgroup_gaps.png)", ""]
    assert (tmp_path / "out" / "subgroup_gaps.png").is_file()
    (ax,) = figures[0].axes
    labels = [t.get_text() for t in ax.get_xticklabels()]
    heights = [p.get_height() for p in ax.patches]
    assert labels == ["a/ext/sex", "b/ext/sex"]
    assert heights[0] == pytest.approx(0.2) and math.isnan(heights[1])


def test_subgroups_section_without_files_is_empty(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 0, {"test/ext/auroc_mean": 0.7})
    assert subgroups_section(StudyRuns.read(tmp_path), tmp_path / "out") == []


def _cka(end: dict[str, float]) -> dict:
    start = {"when": "start", "epoch": 0, "step": 0, "cka": dict.fromkeys(end, 1.0)}
    return {"history": [start, {"when": "end", "epoch": 3, "step": 30, "cka": end}]}


def _drift(l1: dict[str, float]) -> dict:
    drift = {f"stage/{s}": {"l1": v, "rel_l2": 0.1, "n": 4} for s, v in l1.items()}
    drift["block/s1.0"] = {"l1": 9.0, "rel_l2": 0.1, "n": 4}  # a block: not a stage's bar
    return {"history": [{"epoch": 3, "step": 30, "drift": drift}]}


def test_feature_reuse_section_plots_cka_at_the_end_and_drift_per_stage(
    tmp_path: Path, figures: list[Figure]
) -> None:
    results = {"test/ext/auroc_mean": 0.7}
    analysis_a = {
        "cka.json": _cka({"s1": 0.9, "s2": 0.5}),
        "weight_drift.json": _drift({"s1": 0.2}),
    }
    _replica(tmp_path, "a", 0, results, analysis=analysis_a)
    _replica(tmp_path, "b", 0, results, analysis={"weight_drift.json": _drift({"s2": 0.4})})
    out = tmp_path / "out"
    lines = feature_reuse_section(StudyRuns.read(tmp_path), out)
    assert lines == [
        "## Feature reuse",
        "",
        "![CKA against depth](cka_vs_depth.png)",
        "",
        "![weight drift](drift_per_block.png)",
        "",
    ]
    assert (out / "cka_vs_depth.png").is_file() and (out / "drift_per_block.png").is_file()
    cka, drift = (fig.axes[0] for fig in figures)
    assert [(line.get_label(), list(line.get_ydata())) for line in cka.lines] == [("a", [0.9, 0.5])]
    # a and b measured different stages: each bar over its own stage's tick
    assert [t.get_text() for t in drift.get_xticklabels()] == ["s1", "s2"]
    # width 0.8 / 2 configurations; configuration i's bar centred at its stage's tick + 0.4 i
    centres = [p.get_x() + p.get_width() / 2 for p in drift.patches]
    assert centres == pytest.approx([0.0, 1.4])
    assert [p.get_height() for p in drift.patches] == pytest.approx([0.2, 0.4])


def test_feature_reuse_section_drift_alone_has_its_heading(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 0, {}, analysis={"weight_drift.json": _drift({"s1": 0.2})})
    lines = feature_reuse_section(StudyRuns.read(tmp_path), tmp_path / "out")
    assert lines == ["## Feature reuse", "", "![weight drift](drift_per_block.png)", ""]


def test_comparison_section_is_welchs_t_test(tmp_path: Path) -> None:
    for seed, v in enumerate([0.7, 0.8, 0.9]):
        _replica(tmp_path, "a", seed, {"test/ext/auroc_mean": v})
    for seed, v in enumerate([0.5, 0.6]):
        _replica(tmp_path, "b", seed, {"test/ext/auroc_mean": v})
    study = StudyRuns.read(tmp_path)
    cells = metric_cells(study, ["auroc_mean"], 0)
    lines = comparison_section(study, cells, ["auroc_mean"], ["a", "b"])
    # Welch by hand: variances 0.01 / 3 and 0.005 / 2, Welch-Satterthwaite degrees of freedom
    sa, sb = 0.01 / 3, 0.005 / 2
    t = (0.8 - 0.55) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / 2 + sb**2 / 1)
    p = 2 * scipy.stats.t.sf(t, df)
    assert lines[0] == "## a vs b"
    assert (
        f"| ext | auroc_mean | 0.800 ± 0.100 | 0.550 ± 0.071 | Welch | {t:.3f} | {p:.4f} |" in lines
    )
    assert comparison_section(study, cells, ["auroc_mean"], None) == []


def test_comparison_needs_two_replicas_a_side(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 0, {"test/ext/auroc_mean": 0.7})
    _replica(tmp_path, "b", 0, {"test/ext/auroc_mean": 0.6})
    _replica(tmp_path, "b", 1, {"test/ext/auroc_mean": 0.8})
    study = StudyRuns.read(tmp_path)
    lines = comparison_section(
        study, metric_cells(study, ["auroc_mean"], 0), ["auroc_mean"], ["a", "b"]
    )
    assert "| ext | auroc_mean | 0.700 | 0.700 ± 0.141 | n/a | n/a | n/a |" in lines


def test_missing_section_is_empty_when_nothing_is_missing(tmp_path: Path) -> None:
    _replica(tmp_path, "a", 0, {"test/ext/auroc_mean": 0.7})
    _replica(tmp_path, "a", 1, {"test/ext/auroc_mean": 0.7})
    assert missing_section(StudyRuns.read(tmp_path)) == []


@pytest.mark.parametrize(
    ("baseline", "compare", "message"),
    [
        pytest.param("z", None, r"baseline 'z' is not a configuration .*\['a', 'b'\]", id="base"),
        pytest.param(None, ["a", "z"], r"compare 'z' is not a configuration", id="compare"),
        pytest.param(None, ["a"], r"compare takes two configurations, got \['a'\]", id="one"),
    ],
)
def test_unknown_configuration_is_refused(
    tmp_path: Path, baseline: str | None, compare: list[str] | None, message: str
) -> None:
    # one training fraction: the baseline would be ignored, not checked, if checked late
    _replica(tmp_path / "study", "a", 0, {"test/ext/auroc_mean": 0.7})
    _replica(tmp_path / "study", "b", 0, {"test/ext/auroc_mean": 0.8})
    with pytest.raises(ValueError, match=message):
        build_report(tmp_path / "study", tmp_path / "out", baseline=baseline, compare=compare)
    assert not (tmp_path / "out").exists()


class _Cells(HTMLParser):
    """The text of every heading, table cell and image source of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.found.append(("img", dict(attrs)["src"] or ""))
        elif tag in ("h1", "h2", "th", "td"):
            self._tag = tag
            self.found.append((tag, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == self._tag:
            self._tag = None

    def handle_data(self, data: str) -> None:
        if self._tag is not None:
            tag, text = self.found[-1]
            self.found[-1] = (tag, text + data)


def test_render_html_tables_headings_images_and_no_raw_html() -> None:
    text = "\n".join(
        [
            "# Title",
            "",
            "a <b>name</b> & more",
            "",
            "| x | y |",
            "|---|---|",
            "| 1 | Y\\|Z |",
            "",
            "![fig](fig.png)",
        ]
    )
    page = render_html(text)
    parser = _Cells()
    parser.feed(page)
    assert parser.found == [
        ("h1", "Title"),
        ("th", "x"),
        ("th", "y"),
        ("td", "1"),
        ("td", "Y|Z"),
        ("img", "fig.png"),
    ]
    assert "&lt;b&gt;name&lt;/b&gt; &amp; more" in page and "<b>" not in page
    assert page.startswith("<!doctype html>") and "border-collapse:collapse" in page


def test_build_report_writes_markdown_and_its_html(tmp_path: Path) -> None:
    _curves_study(tmp_path / "study")
    md = build_report(tmp_path / "study", baseline="v", n_resamples=10)
    assert md == tmp_path / "study" / "report" / "report.md"
    text = md.read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Study report: study",
        "## Performance",
        "## Best against every other configuration",
        "### auroc_mean (higher is better)",
        "## Data efficiency",
    ]
    parser = _Cells()
    parser.feed((md.parent / "report.html").read_text())
    found = parser.found
    assert ("h2", "Data efficiency") in found and ("img", "data_efficiency.png") in found
    assert ("td", "0.700 (no interval: per-case predictions missing)") in found
    assert [c for tag, c in found if tag == "td"][-4:] == ["ext", "vit (none)", "0.800", "1"]
    assert (md.parent / "data_efficiency.png").is_file()


# Every metric: tests, intervals, tables -------------------------------------------------------
def _bootstrap_file(folder: Path, values: dict[str, list[float]], cases: str = "same") -> None:
    """A stored ``analysis/bootstrap_ext.npz``: per-resample values and the cases' digest."""
    arrays = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    np.savez(folder / "analysis" / "bootstrap_ext.npz", cases=np.array(cases), **arrays)


A_VALUES, B_VALUES = [0.81, 0.84, 0.80, 0.86], [0.78, 0.83, 0.79, 0.80]


def _two_configs(root: Path, cases_b: str = "same") -> StudyRuns:
    """Configurations a and b, seeds 0-3, on the same test cases (unless ``cases_b`` differs)."""
    for name, vals, cases in (("a", A_VALUES, "same"), ("b", B_VALUES, cases_b)):
        for seed, v in enumerate(vals):
            folder = _replica(root, name, seed, {"test/ext/auroc_mean": v})
            _bootstrap_file(folder, {"auroc_mean": [v] * 5}, cases)
    return StudyRuns.read(root)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        pytest.param("welch", scipy.stats.ttest_ind(A_VALUES, B_VALUES, equal_var=False), id="w"),
        pytest.param("student", scipy.stats.ttest_ind(A_VALUES, B_VALUES, equal_var=True), id="s"),
        pytest.param("paired", scipy.stats.ttest_rel(A_VALUES, B_VALUES), id="paired"),
    ],
)
def test_p_values_are_scipys(tmp_path: Path, test: str, expected: object) -> None:
    study = _two_configs(tmp_path)
    cells = metric_cells(study, ["auroc_mean"], 5)
    res = two_sample_test(
        cells[("a", "ext", "auroc_mean")], cells[("b", "ext", "auroc_mean")], test
    )
    assert res is not None
    assert (res.statistic, res.pvalue) == pytest.approx((expected.statistic, expected.pvalue))
    lines = best_section(study, cells, ["auroc_mean"], test)
    assert expected.pvalue >= 0.05  # not significantly different from the best: bold
    assert f"| b | **0.800 ± 0.022** (p={expected.pvalue:.4f}) |" in lines
    assert "| a | **0.828 ± 0.028** (best) |" in lines


def test_paired_needs_shared_cases_and_seeds(tmp_path: Path) -> None:
    study = _two_configs(tmp_path, cases_b="other")
    cells = metric_cells(study, ["auroc_mean"], 5)
    a, b = cells[("a", "ext", "auroc_mean")], cells[("b", "ext", "auroc_mean")]
    res = two_sample_test(a, b, "paired")
    welch = scipy.stats.ttest_ind(A_VALUES, B_VALUES, equal_var=False)
    assert res is not None and res.kind == "Welch" and res.pvalue == pytest.approx(welch.pvalue)
    assert f"(p={welch.pvalue:.4f}, Welch)" in "".join(
        best_section(study, cells, ["auroc_mean"], "paired")
    )


def test_best_against_others_marks_the_not_significantly_different(tmp_path: Path) -> None:
    # task t1: a (best) vs b (same values shifted by 0.001: p ~ 0.9) vs c (far lower: p < 0.05);
    # task t2: c is best, alone with a; ECE: lower is better
    values = {
        ("a", "t1"): [0.80, 0.82, 0.84],
        ("b", "t1"): [0.799, 0.821, 0.839],
        ("c", "t1"): [0.60, 0.61, 0.62],
        ("a", "t2"): [0.70, 0.71, 0.72],
        ("c", "t2"): [0.90, 0.91, 0.92],
    }
    for (init, task), vals in values.items():
        name = f"{init}_{task}"
        for seed, v in enumerate(vals):
            _replica(tmp_path, name, seed, {"test/ext/auroc_mean": v, "test/ext/ece": 1 - v})
        (tmp_path / name / "axes.json").write_text(json.dumps({"init": init, "task": task}))
    study = StudyRuns.read(tmp_path)
    cells = metric_cells(study, ["auroc_mean", "ece"], 0)
    lines = best_section(study, cells, ["auroc_mean", "ece"], "welch")
    p_b = scipy.stats.ttest_ind(values[("a", "t1")], values[("b", "t1")], equal_var=False).pvalue
    p_c = scipy.stats.ttest_ind(values[("a", "t1")], values[("c", "t1")], equal_var=False).pvalue
    p_a2 = scipy.stats.ttest_ind(values[("c", "t2")], values[("a", "t2")], equal_var=False).pvalue
    assert p_b >= 0.05 > p_c and p_a2 < 0.05
    auroc = lines[lines.index("### auroc_mean (higher is better)") :]
    assert "| configuration | t1 (ext) | t2 (ext) |" in auroc
    assert f"| init=a | **0.820 ± 0.020** (best) | 0.710 ± 0.010 (p={p_a2:.4f}) |" in auroc
    assert f"| init=b | **0.820 ± 0.020** (p={p_b:.4f}) | - |" in auroc
    assert f"| init=c | 0.610 ± 0.010 (p={p_c:.4f}) | **0.910 ± 0.010** (best) |" in auroc
    ece = lines[lines.index("### ece (lower is better)") :]
    assert f"| init=c | 0.390 ± 0.010 (p={p_c:.4f}) | **0.090 ± 0.010** (best) |" in ece


def _simulated(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """A two-class model whose confidence is U(0.6, 0.9) and whose top class is right with
    probability confidence - 0.15 (true top-1 0.6, true top-label ECE 0.15 in every bin), and
    per-case Dice ~ Beta(8, 2) for two classes (true mean Dice 0.8)."""
    conf = rng.uniform(0.6, 0.9, n)
    right = rng.random(n) < conf - 0.15
    probs = np.stack([conf, 1 - conf], 1)
    target = np.stack([right, ~right], 1).astype(float)
    return {"probs": probs, "target": target, "dice": rng.beta(8, 2, (n, 2))}


def test_bootstrap_intervals_cover_the_truth(tmp_path: Path) -> None:
    from medxfer.metrics import replica_interval, resampled_metrics

    rng = np.random.default_rng(0)
    truth = {"top1": 0.6, "ece": 0.15, "dice_mean": 0.8}
    hits = dict.fromkeys(truth, 0)
    trials = 150
    for _ in range(trials):
        case = _simulated(rng, 600)
        seed = int(rng.integers(1 << 30))
        values = resampled_metrics(case["probs"], case["target"], "multiclass", 200, seed)
        values |= resampled_metrics(None, None, "segmentation", 200, seed, dice=case["dice"])
        for m, t in truth.items():
            low, high = replica_interval([values[m]])
            hits[m] += low <= t <= high
    for m in truth:
        assert 0.89 <= hits[m] / trials <= 0.995, (m, hits[m] / trials)


def test_stored_resamples_give_the_interval_of_the_raw_predictions(tmp_path: Path) -> None:
    """Replicas of ``stored`` keep bootstrap_ext.npz (written as at test time); the same
    predictions in ``raw`` keep per-case predictions only: the same intervals, equal to
    scikit-learn's AUROC and the torch ECE per resample, resamples drawn over sorted ids."""
    from medxfer.callbacks.predictions import write_bootstrap
    from medxfer.metrics import expected_calibration_error

    rng = np.random.default_rng(3)
    n, resamples = 60, 40
    target = (rng.random((n, 3)) < 0.4).astype(np.float32)
    target[rng.random((n, 3)) < 0.1] = np.nan
    ids = np.array([f"id{i:02d}" for i in rng.permutation(n)])
    probs = [np.clip(np.nan_to_num(target) * 0.3 + rng.random((n, 3)), 0, 1) for _ in range(2)]
    for seed, p in enumerate(probs):
        pred = {"probs": p, "target": target, "id": ids, "task": np.array("multilabel")}
        for name in ("stored", "raw"):
            _write_run(tmp_path / name / f"seed{seed}", 0.5, pred)
        write_bootstrap(
            tmp_path / "stored" / f"seed{seed}" / "analysis" / "bootstrap_ext.npz", pred, 100
        )
    assert not (tmp_path / "raw" / "seed0" / "analysis" / "bootstrap_ext.npz").exists()
    cells = metric_cells(StudyRuns.read(tmp_path), ["auroc_mean", "ece"], resamples)
    order = np.argsort(ids)
    _, low, high = sklearn_replica_interval([p[order] for p in probs], target[order], resamples)
    draws = np.random.default_rng(0).integers(0, n, size=(resamples, n))
    ece = [
        np.mean(
            [
                float(
                    torch.nanmean(
                        expected_calibration_error(
                            torch.tensor(p[order][rows]),
                            torch.tensor(target[order][rows]),
                            task="multilabel",
                            average="none",
                        )
                    )
                )
                for p in probs
            ]
        )
        for rows in draws
    ]
    for name in ("stored", "raw"):
        auroc = cells[(name, "ext", "auroc_mean")]
        assert (auroc.low, auroc.high) == pytest.approx((low, high), abs=1e-12)
        e = cells[(name, "ext", "ece")]
        assert (e.low, e.high) == pytest.approx(tuple(np.percentile(ece, [2.5, 97.5])), abs=1e-6)


def test_convergence_section_counts_epochs(tmp_path: Path) -> None:
    for seed, (best, reached) in enumerate([(4, 2), (6, 3)]):
        record = {"monitor": "val/auroc_mean", "best_epoch": best, "epoch_at_fraction": reached}
        _replica(
            tmp_path, "a", seed, {}, analysis={"convergence.json": {**record, "fraction": 0.99}}
        )
    _replica(tmp_path, "b", 0, {})  # no convergence.json: no row
    lines = convergence_section(StudyRuns.read(tmp_path))
    # epochs = epoch index + 1: (5, 7) -> 6.0 ± 1.4; (3, 4) -> 3.5 ± 0.7
    assert "| a | val/auroc_mean | 2 | 6.0 ± 1.4 | 3.5 ± 0.7 | 0.99 |" in lines
    assert not any(line.startswith("| b |") for line in lines)


def _scale_study(root: Path) -> StudyRuns:
    """Targets x source x model at two shot counts; AUROC = a hand-chosen value per cell,
    replicas +- 0.01."""
    for target in ("cxr", "flowers"):
        for source in ("in21k", "cxr"):
            for shots in ("1", "10"):
                name = f"{target}_{source}_{shots}"
                base = 0.5 + 0.1 * (target == "cxr") + 0.2 * (source == "cxr") + 0.01 * int(shots)
                for seed, d in enumerate((-0.01, 0.01)):
                    _replica(root, name, seed, {"test/t/auroc_mean": base + d})
                axes = {"target": target, "source": source, "model": "r50", "shots": shots}
                (root / name / "axes.json").write_text(json.dumps(axes))
    return StudyRuns.read(root)


def test_layout_section_one_table_per_shot_count(tmp_path: Path) -> None:
    study = _scale_study(tmp_path)
    cells = metric_cells(study, ["auroc_mean"], 0)
    lines = layout_section(
        study, cells, ["auroc_mean"], parse_layout("target:source,model:shots", study)
    )
    i1, i10 = lines.index("### auroc_mean: shots=1"), lines.index("### auroc_mean: shots=10")
    one, ten = lines[i1:i10], lines[i10:]
    assert "| target | cxr, r50 | in21k, r50 |" in one
    assert "| cxr | 0.810 ± 0.014 | 0.610 ± 0.014 |" in one  # 0.5 + 0.1 + 0.2 + 0.01
    assert "| flowers | 0.710 ± 0.014 | 0.510 ± 0.014 |" in one
    assert "| cxr | 0.900 ± 0.014 | 0.700 ± 0.014 |" in ten


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        pytest.param("target", r"expected ROWS:COLS", id="one-part"),
        pytest.param("target:size", r"no configuration has axis 'size'", id="unknown-axis"),
        pytest.param(
            "target:source", r"fall in the same cell; add one of the axes", id="ambiguous"
        ),
    ],
)
def test_bad_layout_is_refused(tmp_path: Path, layout: str, message: str) -> None:
    _scale_study(tmp_path / "study")
    with pytest.raises(ValueError, match=message):
        build_report(tmp_path / "study", tmp_path / "out", layout=layout, n_resamples=0)
    assert not (tmp_path / "out").exists()


def test_reference_table_beside_the_reproduced_replicas(tmp_path: Path) -> None:
    study = _scale_study(tmp_path / "study")
    published = [0.80, 0.83, 0.86]
    rows = ["target,source,shots,seed,metric,value"]
    rows += [f"cxr,cxr,1,{k},auroc_mean,{v}" for k, v in enumerate(published)]
    rows += ["flowers,in21k,10,0,auroc_mean,0.2", "flowers,in21k,10,1,auroc_mean,0.21"]
    (tmp_path / "ref.csv").write_text("\n".join(rows) + "\n")
    ref = read_reference(tmp_path / "ref.csv", study)
    assert [(r.line, r.configuration, r.test_set) for r in ref][::4] == [
        (2, "cxr_cxr_1", "t"),
        (6, "flowers_in21k_10", "t"),
    ]
    lines = reference_section(metric_cells(study, ["auroc_mean"], 0), ref)
    reproduced = [0.80, 0.82]
    p = scipy.stats.ttest_ind(published, reproduced, equal_var=False).pvalue
    p_far = scipy.stats.ttest_ind([0.2, 0.21], [0.59, 0.61], equal_var=False).pvalue
    assert p >= 0.05 > p_far
    assert (
        "| target=cxr, source=cxr, shots=1 | cxr_cxr_1 | t | auroc_mean | 0.830 ± 0.030 (n=3) "
        f"| 0.810 ± 0.014 (n=2) | {p:.4f} | yes |" in lines
    )
    assert (
        "| target=flowers, source=in21k, shots=10 | flowers_in21k_10 | t | auroc_mean "
        f"| 0.205 ± 0.007 (n=2) | 0.600 ± 0.014 (n=2) | {p_far:.4f} | no |" in lines
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param(
            ["cxr,cxr,1,0,auroc_mean,0.8", "cxr,imagenet,1,0,auroc_mean,0.8"],
            r"ref\.csv line 3: no run of .* has target=cxr, source=imagenet, shots=1",
            id="no-run",
        ),
        pytest.param(
            ["cxr,cxr,1,0,dice_mean,0.8"],
            r"ref\.csv line 2: configuration 'cxr_cxr_1' .* logged 'dice_mean' on no test set",
            id="metric",
        ),
        pytest.param(
            ["cxr,cxr,1,0,auroc_mean,high"],
            r"ref\.csv line 2: value 'high' is not a number",
            id="value",
        ),
    ],
)
def test_bad_reference_rows_are_named(tmp_path: Path, rows: list[str], message: str) -> None:
    study = _scale_study(tmp_path / "study")
    (tmp_path / "ref.csv").write_text("\n".join(["target,source,shots,seed,metric,value", *rows]))
    with pytest.raises(ValueError, match=message):
        read_reference(tmp_path / "ref.csv", study)


def test_a_reference_cell_matching_two_configurations_is_refused(tmp_path: Path) -> None:
    study = _scale_study(tmp_path / "study")
    (tmp_path / "ref.csv").write_text("target,source,seed,metric,value\ncxr,cxr,0,auroc_mean,1\n")
    with pytest.raises(
        ValueError, match=r"line 2: .* matches configurations .* axes \['model', 'shots'\]"
    ):
        read_reference(tmp_path / "ref.csv", study)


def test_metric_no_run_logged_is_refused(tmp_path: Path) -> None:
    _replica(tmp_path / "study", "a", 0, {"test/ext/auroc_mean": 0.7, "test/ext/ece": 0.1})
    with pytest.raises(
        ValueError, match=r"metric 'dice_mean' was logged by no run .*auroc_mean, ece"
    ):
        build_report(tmp_path / "study", tmp_path / "out", metrics=["dice_mean"])
    assert not (tmp_path / "out").exists()
    study = StudyRuns.read(tmp_path / "study")
    assert default_metrics(study) == ["auroc_mean", "ece"]


def test_resampled_metrics_computes_the_asked_ones_only() -> None:
    from medxfer.metrics import resampled_metrics

    rng = np.random.default_rng(4)
    target = (rng.random((50, 2)) < 0.5).astype(float)
    probs = rng.random((50, 2))
    every = resampled_metrics(probs, target, "multilabel", 30)
    auroc = resampled_metrics(probs, target, "multilabel", 30, metrics=["auroc_mean"])
    assert list(auroc) == ["auroc_mean"] and np.array_equal(
        auroc["auroc_mean"], every["auroc_mean"]
    )
    with pytest.raises(
        ValueError, match=r"multilabel resamples \['auroc_mean', 'ece'\], not \['top1'\]"
    ):
        resampled_metrics(probs, target, "multilabel", 30, metrics=["top1"])


def test_dice_interval_stored_or_from_raw_predictions_equals_a_numpy_loop(tmp_path: Path) -> None:
    from medxfer.callbacks.predictions import write_bootstrap

    rng = np.random.default_rng(6)
    n, resamples = 30, 50
    ids = np.array([f"img{i:02d}" for i in rng.permutation(n)])
    dice = [rng.beta(5, 2, (n, 2)) for _ in range(2)]
    for seed, d in enumerate(dice):
        pred = {
            "probs": rng.random((n, 2, 4, 4)),  # per-pixel: not what Dice is resampled from
            "target": np.zeros((n, 2, 4, 4)),
            "id": ids,
            "task": np.array("segmentation"),
            "dice": d,
        }
        for name in ("stored", "raw"):
            _write_run(tmp_path / name / f"seed{seed}", 0.5, pred)
        write_bootstrap(
            tmp_path / "stored" / f"seed{seed}" / "analysis" / "bootstrap_ext.npz", pred, 80
        )
    for name in ("stored", "raw"):  # results.json logs dice_mean too
        for seed in (0, 1):
            (tmp_path / name / f"seed{seed}" / "results.json").write_text(
                '{"test/ext/dice_mean": 0.7}'
            )
    cells = metric_cells(StudyRuns.read(tmp_path), ["dice_mean"], resamples)
    order = np.argsort(ids)
    draws = np.random.default_rng(0).integers(0, n, size=(resamples, n))
    means = [np.mean([d[order][rows].mean(axis=0).mean() for d in dice]) for rows in draws]
    expected = tuple(np.percentile(means, [2.5, 97.5]))
    for name in ("stored", "raw"):
        cell = cells[(name, "ext", "dice_mean")]
        assert (cell.low, cell.high) == pytest.approx(expected, abs=1e-12)


def test_a_segmenter_stores_its_dice_resamples_at_test_time(tiny_trainer, tmp_path: Path) -> None:
    """trainer.test with PredictionWriter: each case's Dice kept (their mean is the logged
    dice_mean) and bootstrap_seg.npz holds the mean Dice on resamples drawn over sorted ids."""
    from medxfer.callbacks import PredictionWriter
    from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_montgomery
    from medxfer.tasks import Segmenter

    dm = SegmentationDataModule(
        str(write_synthetic_montgomery(tmp_path / "mont", 12, size=40, seed=3)),
        layout="montgomery",
        lungs="left_right",
        image_size=32,
        augment=False,
        batch_size=4,
        num_workers=0,
        split=(0.3, 0.1, 0.6),
    )
    torch.manual_seed(0)
    task = Segmenter(
        backbone="timm/resnet18",
        num_classes=2,
        label_names=["left_lung", "right_lung"],
        decoder_channels=(32, 16, 8, 8, 8),
    )
    trainer = tiny_trainer(callbacks=[PredictionWriter(n_resamples=20)], limit_test_batches=None)
    trainer.test(task, datamodule=dm, verbose=False)
    pred = np.load(tmp_path / "analysis" / "predictions_seg.npz")
    assert str(pred["task"]) == "segmentation" and pred["dice"].shape == (len(pred["id"]), 2)
    logged = float(trainer.callback_metrics["test/seg/dice_mean"])
    assert pred["dice"].mean(axis=0).mean() == pytest.approx(logged, abs=1e-5)
    stored = np.load(tmp_path / "analysis" / "bootstrap_seg.npz")
    dice = pred["dice"][np.argsort(pred["id"])].astype(np.float64)
    draws = np.random.default_rng(0).integers(0, len(dice), size=(20, len(dice)))
    expected = [dice[rows].mean(axis=0).mean() for rows in draws]
    assert stored["dice_mean"] == pytest.approx(expected, abs=1e-6)


def test_multiclass_metrics_on_all_cases_equal_torch_and_sklearn() -> None:
    from sklearn.metrics import roc_auc_score as auc

    from medxfer.metrics import expected_calibration_error, resampled_metrics

    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3), size=120)
    soft = rng.dirichlet(np.ones(3) * 0.5, size=120)  # soft targets score their top label
    everyone = np.arange(120)[None]
    got = resampled_metrics(probs, soft, "multiclass", indices=everyone)
    top = soft.argmax(1)
    ece = expected_calibration_error(torch.tensor(probs), torch.tensor(soft), task="multiclass")
    assert got["top1"][0] == pytest.approx((probs.argmax(1) == top).mean())
    assert got["ece"][0] == pytest.approx(float(ece), abs=1e-6)
    ovr = np.mean([auc(top == k, probs[:, k]) for k in range(3)])
    assert got["auroc_mean"][0] == pytest.approx(ovr)
    # mean per-class accuracy = scikit-learn's balanced accuracy, on all cases and on resamples
    from sklearn.metrics import balanced_accuracy_score

    assert got["mean_class_acc"][0] == pytest.approx(balanced_accuracy_score(top, probs.argmax(1)))
    draws = rng.integers(0, 120, size=(4, 120))
    again = resampled_metrics(probs, soft, "multiclass", indices=draws)
    for r, idx in enumerate(draws):
        want = balanced_accuracy_score(top[idx], probs[idx].argmax(1))
        assert again["mean_class_acc"][r] == pytest.approx(want)


def test_paired_test_of_a_metric_without_resamples_reads_the_stored_cases(tmp_path: Path) -> None:
    study = _two_configs(tmp_path)
    for name, vals in (("a", A_VALUES), ("b", B_VALUES)):
        for seed, v in enumerate(vals):  # a metric that is not resampled: subgroup gap
            path = tmp_path / name / f"seed{seed}" / "results.json"
            path.write_text(json.dumps({"test/ext/subgroup/sex/gap": v}))
    study = StudyRuns.read(tmp_path)
    cells = metric_cells(study, ["subgroup/sex/gap"], 5)
    a, b = cells[("a", "ext", "subgroup/sex/gap")], cells[("b", "ext", "subgroup/sex/gap")]
    assert a.cases == b.cases == "same"
    res = two_sample_test(a, b, "paired")
    assert res is not None and res.kind == "paired"
    assert res.pvalue == pytest.approx(scipy.stats.ttest_rel(A_VALUES, B_VALUES).pvalue)


CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
#: Appended to the page: once it has loaded, what the browser shows is written into the DOM
#: (the headings, the number of tables and each image's decoded width), for --dump-dom to print.
PROBE = """<script>window.addEventListener("load", () => {
  const seen = {
    headings: [...document.querySelectorAll("h1, h2, h3")].map(h => h.textContent),
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tr").length,
    images: [...document.images].map(i => [i.getAttribute("src"), i.complete, i.naturalWidth]),
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt install chromium)")
def test_report_html_in_a_real_browser_shows_every_section_table_and_plot(
    study: Path, tmp_path: Path
) -> None:
    """``report.html`` opened by headless Chromium: every heading and table of the Markdown is
    on the page, and every figure it names is decoded (a width > 0), none broken."""
    md = build_report(study, tmp_path / "report", baseline="test_resnet_f1.0",
                      compare=["test_resnet_f1.0", "test_efficientnet_f1.0"], n_resamples=100,
                      layout="init:fraction:set")  # fmt: skip
    page = md.with_suffix(".html")
    probe = page.with_name("probe.html")  # beside it: the figures resolve as from report.html
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    import html as html_lib

    seen = json.loads(html_lib.unescape(out.stdout[start : out.stdout.index("</pre>", start)]))
    text = md.read_text()
    headings = [ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")]
    assert seen["headings"] == headings
    assert seen["tables"] == text.count("\n|---") and seen["tables"] >= 8
    pngs = sorted(p.name for p in md.parent.glob("*.png"))
    assert sorted({src for src, *_ in seen["images"]}) == pngs and len(pngs) >= 4
    broken = [src for src, complete, width in seen["images"] if not complete or width == 0]
    assert not broken, broken
