"""``medxfer study``: replicas of one configuration into a study folder, resumable.

A study folder holds one sub-folder per named configuration and one per seed inside it::

    STUDY/<name>/seed<k>/   config.yaml, metrics.csv, checkpoints/, results.json, analysis/

Each replica is ``medxfer fit -c CONFIG ... --seed_everything=k`` in its own process, logging to
its folder, with per-case test predictions written for the report's bootstrap intervals.

Resuming: a replica whose ``results.json`` holds a JSON table is done and skipped (the file is
written atomically, last, by ``medxfer fit``; an empty or truncated one -- a run killed by an
older version -- does not count). A replica that started but did not finish continues from its
``checkpoints/last.ckpt`` (``medxfer fit --resume``, exact) when it has one, else it is run
again. The replica runs as a child that dies with the driver: SIGTERM (or Ctrl-C) to the
driver terminates it, and on Linux a SIGKILLed driver takes it along (``PR_SET_PDEATHSIG``),
so no orphan keeps writing into the study folder.
``medxfer report STUDY`` turns the folder into the paper's tables and plots.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from medxfer import artifacts

__all__ = ["is_finished", "replica_command", "resume_command", "run_replica", "run_study"]

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


def resume_command(run_dir: Path) -> list[str]:
    """The command line that continues an unfinished replica from its last checkpoint."""
    return [sys.executable, "-m", "medxfer", "fit", "--resume", str(run_dir)]


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete ``results.json``, by the rule ``medxfer report``
    reads it with (:func:`medxfer.report.read_results`): an empty, truncated or non-numeric
    file, or none, means the replica must run (again)."""
    from medxfer.errors import RunFileError
    from medxfer.report import read_results

    try:
        read_results(run_dir / artifacts.RESULTS_JSON)
    except (OSError, RunFileError):
        return False
    return True


#: ``prctl(PR_SET_PDEATHSIG, ...)``: the signal a child gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In the replica, before it starts: ask Linux to SIGKILL it when the driver dies (even by
    SIGKILL, which no handler sees); if the driver is already gone, exit at once."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the SIGTERM handler still covers a stop
        return
    if os.getppid() != parent:
        os._exit(1)


def run_replica(cmd: Sequence[str], log_file: Path) -> int:
    """Run one replica, its output appended to ``log_file``; returns its exit status. It dies
    with this process: on Linux by ``PR_SET_PDEATHSIG``, and a SIGTERM / SIGINT to this process
    terminates it (then re-raises here as ``SystemExit(128 + signal)``)."""
    parent = os.getpid()
    preexec = (lambda: _die_with_parent(parent)) if sys.platform.startswith("linux") else None
    with open(log_file, "a") as logf:
        child = subprocess.Popen(
            list(cmd),
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            preexec_fn=preexec,  # only prctl; the driver runs no threads
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            raise _Stopped(signum)  # out of child.wait(), which then holds no lock

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return child.wait()
        except _Stopped as stopped:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise SystemExit(128 + stopped.signum) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Stopped(Exception):
    """The driver got SIGTERM / SIGINT while a replica ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_study(
    config: Sequence[str], out: Path, name: str, seeds: Sequence[int], extra: Sequence[str] = ()
) -> list[Path]:
    """Run (or resume) the replicas; returns their folders. A failing replica stops the study
    with its exit status and the path of its log."""
    # one case-id key for the study: its replicas' prediction files then name cases alike
    artifacts.case_id_key(out)
    folders = []
    what = " ".join(f"-c {c}" for c in config) + "".join(f" {a}" for a in extra)
    for i, seed in enumerate(seeds, 1):
        run_dir = out / name / artifacts.replica_dir(seed)
        folders.append(run_dir)
        head = f"[study] {name} seed {seed} ({i}/{len(seeds)})"
        if is_finished(run_dir):
            print(f"{head}: done, skipped ({run_dir / artifacts.RESULTS_JSON})", flush=True)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        resumable = (run_dir / artifacts.CONFIG_YAML).is_file() and (
            run_dir / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
        ).is_file()
        log_file = run_dir / "log.txt"
        if resumable:
            cmd = resume_command(run_dir)
            doing = (
                f"unfinished, resuming from its last checkpoint (medxfer fit --resume {run_dir})"
            )
        else:
            cmd = replica_command(config, run_dir, seed, extra)
            doing = f"running medxfer fit {what} --seed_everything={seed}"
        print(f"{head}: {doing}; progress in {log_file}", flush=True)
        start = time.monotonic()
        rc = run_replica(cmd, log_file)
        if rc != 0 or not is_finished(run_dir):
            raise SystemExit(f"[study] {name} seed {seed} failed (exit {rc}); see {log_file}")
        took = round(time.monotonic() - start)
        print(
            f"{head}: done in {took} s, results in {run_dir / artifacts.RESULTS_JSON}", flush=True
        )
    return folders
