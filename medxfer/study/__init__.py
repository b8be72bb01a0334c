"""``medxfer study``: a study file's grid of runs into a study folder, resumable, on one machine
(N at a time), a SLURM array (submitit) or W&B agents.

A study folder holds one sub-folder per run of the study file and one per seed inside it::

    STUDY/study.yaml                     the study file it was run from
    STUDY/<run>/axes.json, run_spec.json the run's axis values; its configs, overrides, hash
    STUDY/<run>/seed<k>/                 config.yaml, metrics.csv, checkpoints/, results.json, ...

Each replica is ``medxfer fit -c CONFIG ... --seed_everything=k`` in its own process, logging to
its folder, with per-case test predictions written for the report's bootstrap intervals.
:mod:`medxfer.study.spec` reads and expands study files, :mod:`medxfer.study.executors` runs
their replicas.

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
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from medxfer import artifacts

__all__ = [
    "LOG_TXT",
    "is_finished",
    "replica_command",
    "resume_command",
    "run_replica",
    "stop_child",
]

#: A replica's console output, in its run folder.
LOG_TXT = "log.txt"

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
    reads it with (:func:`medxfer.results.read_results`, standard library only): an empty, truncated or non-numeric
    file, or none, means the replica must run (again)."""
    if not (run_dir / artifacts.RESULTS_JSON).is_file():
        return False
    from medxfer.errors import RunFileError
    from medxfer.results import read_results

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


def run_replica(
    cmd: Sequence[str],
    log_file: Path,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> int:
    """Run one replica, its output appended to ``log_file``; returns its exit status. It dies
    with this process: on Linux by ``PR_SET_PDEATHSIG``, and, called from the main thread, a
    SIGTERM / SIGINT to this process terminates it (then re-raises here as
    ``SystemExit(128 + signal)``). ``on_start`` gets the child (an executor that stops it
    itself: the local pool, a submitit job's checkpoint). The wait polls, so a signal handler
    of the caller may poll the same child without dead-locking on ``Popen``'s wait lock."""
    parent = os.getpid()
    preexec = (lambda: _die_with_parent(parent)) if sys.platform.startswith("linux") else None
    with open(log_file, "a") as logf:
        child = subprocess.Popen(
            list(cmd),
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            preexec_fn=preexec,  # only prctl
        )
        if on_start is not None:
            on_start(child)
        if threading.current_thread() is not threading.main_thread():
            return _poll(child)

        def stop(signum: int, frame: FrameType | None) -> None:
            raise _Stopped(signum)  # out of the wait, which then holds no lock

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return _poll(child)
        except _Stopped as stopped:
            stop_child(child)
            raise SystemExit(128 + stopped.signum) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _poll(child: subprocess.Popen) -> int:
    while (rc := child.poll()) is None:
        time.sleep(0.1)
    return rc


def stop_child(child: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM a replica (``medxfer fit`` writes ``last.ckpt`` and exits) and wait for it; kill
    it after ``grace`` seconds."""
    if child.poll() is not None:
        return
    child.terminate()
    deadline = time.monotonic() + grace
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
        time.sleep(0.1)


class _Stopped(Exception):
    """The driver got SIGTERM / SIGINT while a replica ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
