"""Studies end to end: replicas into a study folder (resumable), then the report's tables and
plots, with bootstrap intervals, data-efficiency matching and the t-test; each section of the
report on a hand-made study folder, and its HTML rendering."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
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
    build_report,
    comparison_section,
    data_efficiency_section,
    feature_reuse_section,
    find_runs,
    metric_cells,
    missing_section,
    performance_section,
    render_html,
    subgroups_section,
    summary_section,
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
    # the console says what ran, with which seed, where its progress and results are, and
    # what to run next; the replica's log has a progress line per epoch
    lines = first.stdout.splitlines()
    assert any(
        "r seed 3 (1/1): running medxfer fit -c " in line
        and "--seed_everything=3; progress in st/r/seed3/log.txt" in line
        for line in lines
    ), first.stdout
    assert any("r seed 3 (1/1): done in" in ln and "st/r/seed3/results.json" in ln for ln in lines)
    assert lines[-1].startswith("next: medxfer report st")
    assert (
        "medxfer: epoch 1  step 4/4  train/loss " in (tmp_path / "st/r/seed3/log.txt").read_text()
    )
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "seed 3 (1/1): done, skipped" in again.stdout


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
