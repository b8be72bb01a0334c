"""``medxfer study``: replicas of one configuration into a study folder, resumable.

A study folder holds one sub-folder per named configuration and one per seed inside it::

    STUDY/<name>/seed<k>/   config.yaml, metrics.csv, checkpoints/, results.json, analysis/

Each replica is ``medxfer fit -c CONFIG ... --seed_everything=k`` in its own process, logging to
its folder, with per-case test predictions written for the report's bootstrap intervals. A
replica whose ``results.json`` exists is skipped, so a killed study continues where it stopped.
``medxfer report STUDY`` turns the folder into the paper's tables and plots.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from medxfer import artifacts

__all__ = ["replica_command", "run_study"]

log = logging.getLogger(__name__)


def replica_command(
    config: Sequence[str], run_dir: Path, seed: int, extra: Sequence[str]
) -> list[str]:
    """The ``medxfer fit`` command line of one replica."""
    configs = [a for c in config for a in ("-c", str(c))]
    return [
        sys.executable, "-m", "medxfer", "fit", *configs, *extra,
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.name=",
        "--trainer.logger.init_args.version=",
        "--trainer.callbacks+=medxfer.callbacks.PredictionWriter",
    ]  # fmt: skip


def run_study(
    config: Sequence[str], out: Path, name: str, seeds: Sequence[int], extra: Sequence[str] = ()
) -> list[Path]:
    """Run (or resume) the replicas; returns their folders. A failing replica stops the study
    with its exit status and the path of its log."""
    folders = []
    for seed in seeds:
        run_dir = out / name / f"seed{seed}"
        folders.append(run_dir)
        if (run_dir / artifacts.RESULTS_JSON).is_file():
            print(f"[study] {name} seed {seed}: done, skipped")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = replica_command(config, run_dir, seed, extra)
        print(f"[study] {name} seed {seed}: running")
        log_file = run_dir / "log.txt"
        with open(log_file, "w") as logf:
            rc = subprocess.run(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            ).returncode
        if rc != 0 or not (run_dir / artifacts.RESULTS_JSON).is_file():
            raise SystemExit(f"[study] {name} seed {seed} failed (exit {rc}); see {log_file}")
    return folders


def main(argv: Sequence[str]) -> int:
    """``medxfer study -c CONFIG [-c MORE] --out STUDY --name NAME --seeds 0 1 2 [-- overrides]``."""
    from medxfer.cli import CommandParser

    if "--" in argv:
        i = list(argv).index("--")
        argv, extra = list(argv[:i]), list(argv[i + 1 :])
    else:
        extra = []
    p = CommandParser(
        prog="medxfer study", description="Run N seeds of a config into a study folder (resumable)."
    )
    p.add_argument(
        "-c", "--config", action="append", required=True, help="config file(s), as for medxfer fit"
    )
    p.add_argument("--out", type=Path, required=True, help="the study folder")
    p.add_argument(
        "--name", required=True, help="this configuration's name in the study (e.g. bit-r50x1_f0.1)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    run_study(args.config, args.out, args.name, args.seeds, extra)
    return 0
