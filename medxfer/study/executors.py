"""Run a study's replicas on existing engines: a thread pool on one machine, a SLURM job array
through submitit, or W&B agents of a grid sweep -- no scheduler of medxfer's own.

Every executor runs the same unit, :func:`run_one`: a replica with a complete
``results.json`` is skipped, one with a ``last.ckpt`` continues from it (``medxfer fit
--resume``, exact), anything else starts afresh. So re-running, requeueing or re-submitting a
study does only what is left, and the study folder is the one record of what is done.

- local (:func:`run_local`): N replicas at a time in a :class:`~concurrent.futures.
  ThreadPoolExecutor`, each a child process (:func:`medxfer.study.run_replica`); a failed
  replica is reported at the end and does not stop the others.
- SLURM (:func:`submit`): one job-array task per replica (``executor.map_array``), at most
  ``slurm_array_parallelism`` at once; each task is a :class:`ReplicaJob`
  (``submitit.helpers.Checkpointable``): on pre-emption or time-out submitit calls its
  ``checkpoint``, which stops the fit (it writes ``last.ckpt``) and requeues the task, which
  then resumes. Tasks are independent: one failing leaves the others' results in place.
- W&B (:func:`sweep_definition`): a grid sweep whose one parameter is the replica
  (``<run>/seed<k>``); each agent run is ``medxfer study run FILE --only <run>/seed<k>``, so
  the study file stays the one source of truth and the run lands under its stable name.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from medxfer import artifacts, study
from medxfer.study.spec import Replica, Study

__all__ = [
    "ReplicaJob",
    "collect",
    "prepare",
    "run_local",
    "run_one",
    "submit",
    "sweep_definition",
]

#: The head of :func:`medxfer.study.replica_command` / ``resume_command`` that runs ``medxfer
#: fit``; ``fit=`` replaces it (a stand-in program in tests).
_FIT_HEAD = 4


def prepare(plan: Study, replicas: Sequence[Replica]) -> None:
    """Before any replica runs: the study file's copy (``study.yaml``), each run's
    ``axes.json`` and ``run_spec.json``, and the study's case-id key (one for all replicas,
    so their prediction files name cases alike). Run folders are checked first
    (:func:`medxfer.study.spec.check_run_folders`)."""
    from medxfer.study.spec import check_run_folders

    runs = list({r.run.name: r.run for r in replicas}.values())
    check_run_folders(plan, runs)
    plan.out.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(plan.out / artifacts.STUDY_YAML, plan.text)
    artifacts.case_id_key(plan.out)
    for run in runs:
        folder = plan.out / run.name
        folder.mkdir(exist_ok=True)
        artifacts.write_json(folder / artifacts.AXES_JSON, run.axes)
        artifacts.write_json(folder / artifacts.RUN_SPEC_JSON, run.spec())


def _command(replica: Replica, fit: Sequence[str] | None) -> tuple[list[str], str]:
    """The replica's command line (continued from ``last.ckpt`` when it has one) and what it
    does, in words."""
    run_dir = replica.run_dir
    resumable = (run_dir / artifacts.CONFIG_YAML).is_file() and (
        run_dir / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
    ).is_file()
    if resumable:
        cmd, doing = study.resume_command(run_dir), "resuming from its last.ckpt"
    else:
        run = replica.run
        cmd = study.replica_command(run.configs, run_dir, replica.seed, run.arguments())
        doing = "running"
    if fit is not None:
        cmd = [*fit, *cmd[_FIT_HEAD:]]
    return cmd, doing


def run_one(
    replica: Replica,
    fit: Sequence[str] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> int:
    """Run (or resume, or skip) one replica; returns the exit status (0: finished).

    Args:
        replica: the replica.
        fit: a program standing for ``python -m medxfer fit`` (tests).
        on_start: called with the child process when it starts.
    """
    run_dir = replica.run_dir
    if study.is_finished(run_dir):
        print(f"[study] {replica.label}: done, skipped", flush=True)
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd, doing = _command(replica, fit)
    log_file = run_dir / study.LOG_TXT
    print(f"[study] {replica.label}: {doing}; progress in {log_file}", flush=True)
    start = time.monotonic()
    rc = study.run_replica(cmd, log_file, on_start=on_start)
    if rc == 0 and not study.is_finished(run_dir):
        rc = 1  # exited without results.json
    took = round(time.monotonic() - start)
    if rc == 0:
        print(f"[study] {replica.label}: done in {took} s", flush=True)
    else:
        print(
            f"[study] {replica.label}: failed (exit {rc}) after {took} s; see {log_file}",
            flush=True,
        )
    return rc


def run_local(
    replicas: Sequence[Replica], jobs: int = 1, fit: Sequence[str] | None = None
) -> list[Replica]:
    """Run the replicas on this machine, ``jobs`` at a time; returns those that failed.

    With ``jobs > 1`` the replicas run from a thread pool; SIGTERM / Ctrl-C to this process
    stops every running fit (each writes ``last.ckpt``) and exits ``128 + signal``, and the
    next run of the study continues them.
    """
    if jobs <= 1:
        return [r for r in replicas if run_one(r, fit) != 0]
    live: set[subprocess.Popen] = set()
    lock = threading.Lock()
    stopping = threading.Event()

    def started(child: subprocess.Popen) -> None:
        with lock:
            live.add(child)

    def one(replica: Replica) -> int:
        if stopping.is_set():
            return -1
        return run_one(replica, fit, on_start=started)

    class Stop(Exception):
        pass

    def stop(signum: int, frame: Any) -> None:
        raise Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="replica")
    try:
        futures = [pool.submit(one, r) for r in replicas]
        while not all(f.done() for f in futures):
            time.sleep(0.2)
    except Stop as stopped:
        stopping.set()
        with lock:
            children = list(live)
        for child in children:
            study.stop_child(child)
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit(128 + stopped.args[0]) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    pool.shutdown(wait=True)
    return [r for r, f in zip(replicas, futures, strict=True) if f.result() != 0]


class ReplicaJob(Checkpointable):
    """One replica as a submitit task, requeued on pre-emption / time-out.

    A ``submitit.helpers.Checkpointable``: submitit calls :meth:`checkpoint` when SLURM
    signals the end of the task's time (``USR2``, ``signal_delay_s`` before it) or
    pre-emption; it stops the running fit (which writes ``last.ckpt``) and resubmits the same
    replica, which :func:`run_one` then continues from that checkpoint.
    """

    def __init__(self, fit: Sequence[str] | None = None) -> None:
        self.fit = list(fit) if fit is not None else None
        self._child: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"fit": self.fit}  # never the running child

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fit, self._child = state["fit"], None

    def _started(self, child: subprocess.Popen) -> None:
        self._child = child

    def __call__(self, replica: Replica) -> str:
        """Run the replica; returns its run folder. Raises ``RuntimeError`` if it fails."""
        rc = run_one(replica, self.fit, on_start=self._started)
        if rc != 0:
            raise RuntimeError(
                f"{replica.label} failed (exit {rc}); see {replica.run_dir / study.LOG_TXT}"
            )
        return str(replica.run_dir)

    def checkpoint(self, replica: Replica) -> DelayedSubmission:
        """Stop the fit (it writes ``last.ckpt``) and resubmit the replica."""
        if self._child is not None:
            study.stop_child(self._child)
        return DelayedSubmission(ReplicaJob(self.fit), replica)


def submit(
    replicas: Sequence[Replica], executor: Any, fit: Sequence[str] | None = None
) -> list[Any]:
    """Submit one array task per unfinished replica with a submitit executor; returns the jobs.

    Args:
        replicas: the replicas (finished ones are skipped here, not submitted).
        executor: a submitit executor with its parameters set (``AutoExecutor`` for SLURM:
            ``timeout_min``, ``slurm_partition``, ``gpus_per_node``,
            ``slurm_array_parallelism``...; ``LocalExecutor`` / ``DebugExecutor`` on one machine).
        fit: a program standing for ``python -m medxfer fit`` (tests).
    """
    todo = [r for r in replicas if not study.is_finished(r.run_dir)]
    if not todo:
        return []
    return list(executor.map_array(ReplicaJob(fit), todo))


def collect(jobs: Sequence[Any]) -> list[tuple[Any, str]]:
    """Wait for submitit jobs; returns ``(job, error line)`` for each failed one. A failed
    task does not stop the others: every job is waited for."""
    failed = []
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # submitit re-raises the task's failure
            # a local / SLURM job's error holds the task's traceback: its last "...Error:" line
            lines = [ln.strip() for ln in str(err).splitlines() if "Error" in ln]
            failed.append((job, lines[-1] if lines else type(err).__name__))
    return failed


def sweep_definition(plan: Study, only: Sequence[Replica] | None = None) -> dict[str, Any]:
    """A W&B grid sweep over the study's replicas: one parameter, ``only``, whose values are
    ``<run>/seed<k>``; W&B's ``${args}`` gives ``--only=<run>/seed<k>``, so each agent run is
    ``medxfer study run FILE --out STUDY --only <run>/seed<k>``."""
    replicas = plan.replicas() if only is None else only
    return {
        "name": plan.file.stem,
        "method": "grid",
        "command": ["medxfer", "study", "run", str(plan.file), "--out", str(plan.out), "${args}"],
        "parameters": {"only": {"values": [r.label for r in replicas]}},
    }
