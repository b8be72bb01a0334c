"""Exactness under DDP: 2 CPU processes (gloo, strategy="ddp", uneven last batches) log the
same AUROC, ECE, subgroup, Dice and IoU figures as one process, to 1e-6."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("ddp_check.py")


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
    ):
        assert family in keys
    assert set(keys) <= set(two["logged"])
    for key in keys:
        a, b = one["logged"][key], two["logged"][key]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6, (key, a, b)


def test_two_ddp_ranks_give_the_dice_of_one_process(tmp_path: Path) -> None:
    from medxfer.datamodules import write_synthetic_montgomery

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
