"""Start-up time of the ``medxfer`` command and of importing medxfer's packages, each in fresh
processes, in one run (a benchmark, not a test)::

    python benchmarks/startup.py --repeats 5

Every command runs ``--repeats`` times in a new Python process (the cases interleaved, so a
busy machine slows all of them alike); the best wall time and that run's peak memory are
printed. ``medxfer --help`` and ``medxfer list ...`` (which read entry-point metadata and never
import torch) have a target of <= 1.5x a bare ``python -c "import torch"``, and their ratio to
it is printed. The two package imports cannot be faster than the library they are built on
(``medxfer.datamodules`` subclasses Lightning's ``LightningDataModule``, ``medxfer.metrics``
torchmetrics' ``Metric``), so they are printed with their ratio to importing that library
alone, and ``python -c pass`` gives the interpreter's own start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

#: Target of the ``medxfer`` command's light subcommands: this multiple of ``import torch``.
TARGET_RATIO = 1.5


def medxfer_command() -> list[str]:
    """The console script the install created, else ``python -m medxfer``."""
    script = Path(sys.executable).parent / "medxfer"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "medxfer"]


def run_once(command: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak resident memory (MB) of one run of ``command``."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak memory
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(command)} exited with {code}:\n{err[-2000:]}")
    if proc.stderr:
        proc.stderr.close()
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cli = medxfer_command()
    python = [sys.executable, "-c"]
    # (label, command, what it is compared with: "target" or the label of its floor)
    cases: list[tuple[str, list[str], str | None]] = [
        ("python -c pass", [*python, "pass"], None),
        ("import torch", [*python, "import torch"], None),
        ("medxfer --help", [*cli, "--help"], "target"),
        ("medxfer list datamodules", [*cli, "list", "datamodules"], "target"),
        ("medxfer list tasks", [*cli, "list", "tasks"], "target"),
        ("medxfer list readers", [*cli, "list", "readers"], "target"),
        ("medxfer list backbones", [*cli, "list", "backbones"], "target"),
        ("import lightning", [*python, "import lightning"], None),
        ("import medxfer.datamodules", [*python, "import medxfer.datamodules"], "import lightning"),
        ("import torchmetrics", [*python, "import torchmetrics"], None),
        ("import medxfer.metrics", [*python, "import medxfer.metrics"], "import torchmetrics"),
    ]
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in cases}
    for _ in range(args.repeats):
        for label, command, _ in cases:
            runs[label].append(run_once(command))
    best = {label: min(times) for label, times in runs.items()}

    print(f"best of {args.repeats} fresh processes, {os.cpu_count()} CPUs, {' '.join(cli)}")
    print(f"{'command':28s} {'wall':>8s} {'peak RSS':>10s}  ratio")
    for label, _, against in cases:
        wall, rss = best[label]
        if against == "target":
            ratio = (
                f"{wall / best['import torch'][0]:5.2f}x import torch (target <= {TARGET_RATIO:g})"
            )
        elif against is not None:
            ratio = f"{wall / best[against][0]:5.2f}x {against}"
        else:
            ratio = ""
        print(f"{label:28s} {wall:6.2f} s {rss:7.0f} MB  {ratio}")


if __name__ == "__main__":
    main()
