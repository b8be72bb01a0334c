"""Exactness under DDP: 2 CPU processes (gloo, strategy="ddp", uneven last batches) log the
same AUROC, ECE and subgroup figures as one process, to 1e-6."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("ddp_check.py")


def _run(data: Path, out: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(data), str(out), str(devices)],
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
