"""Time of ``medxfer report`` over a study folder of 1,420 runs at the benchmark's real test-set
sizes, and of the per-resample metrics each run stores at test time (a benchmark, not a test)::

    python benchmarks/report_scale.py               # target: the report in <= 60 s on 2 cores
    python benchmarks/report_scale.py --runs 200    # a smaller folder, same layout

The study is the grid of the benchmark of pre-trained ResNet-50s: 21 initialisations x 7 tasks
x 10 seeds (1,470 grid points; the first ``--runs`` of them, 1,420 by default, as the study
reports). Each run folder is what ``medxfer study`` leaves: ``axes.json`` per configuration;
``results.json``, ``config.yaml``, ``analysis/predictions_<set>.npz`` (per-case probabilities,
targets and keyed ids, float32) and ``analysis/convergence.json`` per replica. ChestX-ray14 has
its real official test split, 25,596 images x 14 labels; the other tasks have test sets of
their order of size (CheXpert's 234 x 5 labels, a 3-class RSNA pneumonia split of 3,000, a
binary tuberculosis set of 132 and an embolism set of 5,000 candidates; two segmentation tasks
of 2,142 and 100 images scored by per-case Dice).

``analysis/bootstrap_<set>.npz`` holds each metric on 1,000 resamples of the test cases, as
``PredictionWriter`` stores it at test time. Its cost is measured on one ChestX-ray14 run
(25,596 x 14 x 1,000: the fast path, printed); computing it for all 1,420 runs would take the
build that long again, so the other runs store the measured run's values plus a per-run offset
(the report's work -- reading and averaging 1,000 values per metric and replica -- does not
depend on the values). Then ``medxfer report`` runs in a fresh process, as a user runs it,
with the scale grid layout; its wall time is printed. Without the stored files the report
would resample every run's predictions: the last line estimates that from the measured run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from medxfer import artifacts
from medxfer.callbacks.predictions import write_bootstrap
from medxfer.metrics import case_order, resampled_metrics

#: task -> (test set, cases, labels, output type).
TASKS = {
    "dxc14": ("chestxray14", 25_596, 14, "multilabel"),
    "dxc5": ("chexpert", 234, 5, "multilabel"),
    "tb": ("shenzhen", 132, 1, "multilabel"),
    "pneumonia": ("rsna", 3_000, 3, "multiclass"),
    "ecc": ("pe_cad", 5_000, 1, "multilabel"),
    "pxs": ("siim_acr", 2_142, 1, "segmentation"),
    "lxs": ("jsrt", 100, 2, "segmentation"),
}
INITS = [f"init{i:02d}" for i in range(21)]
SEEDS = range(10)


def _predictions(task: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One replica's ``predictions_<set>.npz`` arrays: keyed-id-like ids (shared by every
    replica of the task), probabilities, targets, the task and, for a segmenter, Dice."""
    _, n, k, kind = TASKS[task]
    ids = np.array([f"{i:020x}" for i in np.random.default_rng(len(task)).permutation(n)])
    if kind == "multiclass":
        target = np.eye(k, dtype=np.float32)[np.random.default_rng(1).integers(0, k, n)]
        logits = rng.normal(target * 1.5, 1.0)
        probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    else:
        target = (np.random.default_rng(2).random((n, k)) < 0.1).astype(np.float32)
        probs = (1 / (1 + np.exp(-rng.normal(target * 1.5 - 1, 1.0)))).astype(np.float32)
    out = {
        artifacts.PROBS: probs,
        artifacts.TARGET: target,
        artifacts.CASE_ID: ids,
        artifacts.TASK: np.array(kind),
    }
    if kind == "segmentation":
        out[artifacts.DICE] = rng.beta(8, 2, (n, k)).astype(np.float32)
    return out


def build(study: Path, n_runs: int) -> tuple[float, float]:
    """Write the study folder; return the seconds of the stored bootstrap of one ChestX-ray14
    run (AUROC + ECE) and of its AUROC alone."""
    rng = np.random.default_rng(0)
    grid = [(i, t, s) for t in TASKS for i in INITS for s in SEEDS][:n_runs]
    measured: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    t_boot = t_auroc = float("nan")
    for init, task, seed in grid:
        test_set, _, _, kind = TASKS[task]
        name = f"{init}_{task}"
        folder = study / name / artifacts.replica_dir(seed)
        analysis = folder / artifacts.ANALYSIS_DIR
        analysis.mkdir(parents=True)
        if seed == 0:
            axes = {"init": init, "task": task, "model": "resnet50"}
            (study / name / artifacts.AXES_JSON).write_text(json.dumps(axes))
        pred = _predictions(task, rng)
        np.savez(analysis / artifacts.predictions_npz(test_set), **pred)
        boot = analysis / artifacts.bootstrap_npz(test_set)
        if task not in measured:
            t0 = time.perf_counter()
            write_bootstrap(boot, pred, 1000)
            if task == "dxc14":
                t_boot = time.perf_counter() - t0
                t0 = time.perf_counter()
                order = case_order(pred[artifacts.CASE_ID])
                probs, target = pred[artifacts.PROBS][order], pred[artifacts.TARGET][order]
                resampled_metrics(probs, target, kind, 1000, metrics=[artifacts.AUROC_MEAN])
                t_auroc = time.perf_counter() - t0
            measured[task] = (boot, dict(np.load(boot)))
        else:
            stored = measured[task][1]
            shift = rng.normal(0, 0.01)
            np.savez(
                boot,
                **{
                    k: v if k == artifacts.BOOTSTRAP_CASES else v + shift for k, v in stored.items()
                },
            )
        metric = {"multilabel": "auroc_mean", "multiclass": "top1", "segmentation": "dice_mean"}
        base = 0.7 + 0.005 * INITS.index(init) + rng.normal(0, 0.01)
        results = {artifacts.result_key(test_set, metric[kind]): base}
        if kind != "segmentation":
            results[artifacts.result_key(test_set, artifacts.AUROC_MEAN)] = base
            results[artifacts.result_key(test_set, artifacts.ECE)] = 0.05 + rng.random() / 50
        artifacts.write_json(folder / artifacts.RESULTS_JSON, results)
        config = {
            "seed_everything": seed,
            "model": {"class_path": "MultiLabelClassifier", "init_args": {
                "backbone": "resnet50", "pretrained": init, "lr": 2e-4, "optimizer": "adam"}},
            "data": {"class_path": "ChestXrayDataModule", "init_args": {
                "batch_size": 32, "image_size": 224, "train_fraction": 1.0}},
            "trainer": {"max_epochs": 200, "precision": "bf16-mixed", "callbacks": [
                {"class_path": "medxfer.callbacks.PredictionWriter"},
                {"class_path": "medxfer.callbacks.ConvergenceCallback"}]},
        }  # fmt: skip
        (folder / artifacts.CONFIG_YAML).write_text(yaml.safe_dump(config))
        best = int(rng.integers(5, 40))
        convergence = {"monitor": "val/auroc_mean", "mode": "max", "best_epoch": best,
                       "epoch_at_fraction": best // 2, "fraction": 0.99}  # fmt: skip
        artifacts.write_json(analysis / artifacts.CONVERGENCE_JSON, convergence)
    return t_boot, t_auroc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1420)
    p.add_argument("--keep", type=Path, default=None, help="build the study here and keep it")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="report_scale_")) if args.keep is None else args.keep
    study = root / "study"
    try:
        t0 = time.perf_counter()
        t_boot, t_auroc = build(study, args.runs)
        t_build = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in study.rglob("*") if f.is_file()) / 2**30
        print(f"study folder: {args.runs} runs, {size:.2f} GiB, built in {t_build:.0f} s")
        print(
            "stored bootstrap of one ChestX-ray14 run (25,596 cases x 14 labels x 1,000 "
            f"resamples): {t_boot:.1f} s (mean AUROC + ECE); AUROC alone {t_auroc:.1f} s "
            f"({t_auroc / 14:.2f} s per label)"
        )
        cmd = [sys.executable, "-m", "medxfer", "report", str(study), "--layout", "init:task"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        t_report = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"medxfer report failed:\n{proc.stderr[-3000:]}")
        lines = (study / artifacts.REPORT_DIR / artifacts.REPORT_MD).read_text().count("\n")
        print(f"medxfer report: {t_report:.1f} s (target <= 60 s), report.md {lines} lines")
        cxr14 = sum(1 for i, t, s in [(0, t, 0) for t in TASKS for _ in INITS for _ in SEEDS]
                    [: args.runs] if t == "dxc14")  # fmt: skip
        print(
            f"without stored resamples: ~{cxr14 * t_boot / 60:.0f} min to resample the "
            f"{cxr14} ChestX-ray14 runs' predictions alone"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
