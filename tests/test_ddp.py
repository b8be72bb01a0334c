"""Exactness under DDP: 2 CPU processes (gloo, strategy="ddp", uneven last batches) log the
same AUROC, ECE, subgroup, Dice and IoU figures as one process, to 1e-6; and ``medxfer fit``
itself, as a user runs it, on two ranks with every analysis callback."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medxfer.datamodules.chest_xray import COMPETITION_LABELS

SCRIPT = Path(__file__).with_name("ddp_check.py")
REPO = Path(__file__).resolve().parents[1]


def _run(data: Path, out: Path, devices: int, kind: str = "cxr") -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(data), str(out), str(devices), kind],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # two evaluations in subprocesses, ~40 s: make test-all
def test_two_ranks_launched_by_torchrun_log_what_one_process_logs(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    """Multi-node training stays Lightning's: under ``torchrun`` (as on a cluster, one process
    per rank started by the launcher, not by Lightning) the same script finds its rank and world
    size from the environment (TorchElasticEnvironment) and logs what one process logs."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    out = tmp_path / "torchrun.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    torchrun += ["--nproc_per_node=2", str(SCRIPT), str(synthetic_cxr["root"]), str(out), "2"]
    proc = subprocess.run(torchrun, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    two = json.loads(out.read_text())
    one = _run(synthetic_cxr["root"], tmp_path / "one.json", 1)
    assert two["world_size"] == 2
    keys = [k for k in one["logged"] if not k.endswith("/loss")]
    assert "test/nih/ece" in keys and set(keys) <= set(two["logged"])
    for key in keys:
        a, b = one["logged"][key], two["logged"][key]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6, (key, a, b)


def test_two_ddp_ranks_log_what_one_process_logs(
    synthetic_cxr: dict[str, Path], tmp_path: Path
) -> None:
    one = _run(synthetic_cxr["root"], tmp_path / "one.json", 1)
    two = _run(synthetic_cxr["root"], tmp_path / "two.json", 2)
    assert two["world_size"] == 2
    assert any(n % 10 for n in one["sizes"].values())  # at least one set ends on an uneven batch
    keys = [k for k in one["logged"] if not k.endswith("/loss")]
    for family in (
        "val/auroc_mean",
        "val/ece",
        "test/nih/ece",
        "test/chexpert/auroc_mean",
        "test/nih/subgroup/sex/gap",
        "val/subgroup/age/mean",
        # --- fairness: temperature scaling, ECE / operating points per subgroup ---
        "val/temperature",
        "test/nih/ece_scaled",
        "test/nih/subgroup/sex/equalized_odds_gap",
    ):
        assert family in keys
    assert set(keys) <= set(two["logged"])
    for key in keys:
        a, b = one["logged"][key], two["logged"][key]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6, (key, a, b)


@pytest.mark.slow  # ~25 s each: make test-all (the DDP fit below stays in make test)
def test_two_ddp_ranks_give_the_dice_of_one_process(tmp_path: Path) -> None:
    from medxfer.datamodules.segmentation import write_synthetic_montgomery

    data = write_synthetic_montgomery(tmp_path / "mont", 22, size=32, seed=0)
    one = _run(data, tmp_path / "one.json", 1, "seg")
    two = _run(data, tmp_path / "two.json", 2, "seg")
    assert two["world_size"] == 2
    assert any(n % 3 for n in one["sizes"].values())  # an uneven last batch
    keys = [k for k in one["logged"] if not k.endswith("/loss")]
    assert {"val/dice_mean", "val/iou/lung", "test/seg/dice_global_mean"} <= set(keys)
    for key in keys:
        a, b = one["logged"][key], two["logged"][key]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6, (key, a, b)


@pytest.mark.slow  # ~25 s each: make test-all (the DDP fit below stays in make test)
def test_two_ddp_ranks_write_the_masks_of_one_process(tmp_path: Path) -> None:
    """``MaskWriter`` under DDP: every rank finds the run folder once (``trainer.log_dir``
    broadcasts, so a rank asking alone would wait forever) and writes its own cases' PNGs."""
    from medxfer.datamodules.segmentation import write_synthetic_montgomery

    data = write_synthetic_montgomery(tmp_path / "mont", 22, size=32, seed=0)
    (tmp_path / "id_key").write_text("ab" * 32 + "\n")  # one key above both runs' folders
    one = _run(data, tmp_path / "one.json", 1, "masks")
    two = _run(data, tmp_path / "two.json", 2, "masks")
    assert two["world_size"] == 2
    assert one["masks"] and two["masks"] == one["masks"]


def test_medxfer_fit_on_two_ranks_with_every_analysis(tmp_path: Path) -> None:
    """The console script under ``--trainer.strategy=ddp``: Lightning starts rank 1 by running
    the same command line again (it once ran with no command), and the callbacks write their
    files on rank 0 while rank 1 goes on (rank 0 once waited forever in ``trainer.log_dir``'s
    broadcast). The gathered predictions hold every test case once, and their AUROC
    (scikit-learn) is what the ranks logged together."""
    script = Path(sys.executable).parent / "medxfer"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    synth = [str(script), "synthesize", "cxr", "data/synthetic"]
    synth += ["--patients", "40", "--shift-patients", "10", "--size", "40"]
    subprocess.run(synth, cwd=tmp_path, check=True, capture_output=True, env=env)
    callbacks = ["CalibrationCallback", "SubgroupCallback", "WeightDriftCallback", "CKACallback"]
    callbacks += ["PredictionWriter"]
    fit = [str(script), "fit", "-c", str(REPO / "configs/tiny.yaml")]
    fit += ["--trainer.devices=2", "--trainer.strategy=ddp"]
    fit += [f"--trainer.callbacks+=medxfer.callbacks.{c}" for c in callbacks]
    proc = subprocess.Popen(
        fit,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # both ranks in one process group, killed together
    )
    try:
        out, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"medxfer fit on 2 ranks did not finish in 420 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-4000:]
    assert "GLOBAL_RANK: 1" in out  # two ranks really ran
    run = tmp_path / "runs/tiny/lightning_logs/version_0"
    analysis = run / "analysis"
    for name in ("calibration_test_nih.json", "subgroups_test_nih.json", "cka.json"):
        assert (analysis / name).is_file(), name
    assert json.loads((analysis / "weight_drift.json").read_text())["history"]
    written = json.loads((run / "results.json").read_text())
    sizes = {"chexpert": 21, "nih": 37}  # the test split's rows and the shifted table's
    for name, size in sizes.items():
        with np.load(analysis / f"predictions_{name}.npz") as npz:
            assert len(set(npz["id"].tolist())) == len(npz["id"]) == size
            probs, target = npz["probs"], npz["target"]
        for k, label in enumerate(COMPETITION_LABELS):
            known = ~np.isnan(target[:, k])
            expected = roc_auc_score(target[known, k], probs[known, k])
            got = written[f"test/{name}/auroc/{label.replace(' ', '_')}"]
            assert got == pytest.approx(expected, abs=1e-6), (name, label)
