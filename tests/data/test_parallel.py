"""medxfer.data.parallel: jobs run at once, results in order, and the error reported is the
one a run one after another would report; on one CPU, no thread."""

from __future__ import annotations

import os
import threading
import time

import pytest

from medxfer.data import parallel
from medxfer.data.parallel import in_parallel, usable_cpus


def test_usable_cpus_is_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cpus() == 3


def test_jobs_run_at_once_and_results_keep_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    both = threading.Barrier(2, timeout=10)  # one after another, the first job would time out

    def job(value: str) -> tuple[str, str]:
        both.wait()
        return value, threading.current_thread().name

    (a, thread_a), (b, thread_b) = in_parallel(lambda: job("a"), lambda: job("b"))
    assert (a, b) == ("a", "b")
    assert thread_a != thread_b and threading.current_thread().name not in (thread_a, thread_b)


def test_the_first_failing_job_in_order_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    finished = []

    def slow_bad() -> None:
        time.sleep(0.2)  # fails last in time, first in order
        finished.append("first")
        raise ValueError("first job")

    def fast_bad() -> None:
        finished.append("second")
        raise KeyError("second job")

    with pytest.raises(ValueError, match="first job"):
        in_parallel(slow_bad, fast_bad, lambda: finished.append("third"))
    assert sorted(finished) == ["first", "second", "third"]  # every job ran to its end


def test_one_cpu_runs_the_jobs_here_one_after_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    here = threading.current_thread().name
    order: list[str] = []

    def job(value: str) -> str:
        order.append(value)
        return threading.current_thread().name

    assert in_parallel(lambda: job("a"), lambda: job("b")) == [here, here]
    assert order == ["a", "b"]
    with pytest.raises(ValueError, match="stops here"):
        in_parallel(lambda: (_ for _ in ()).throw(ValueError("stops here")), lambda: job("c"))
    assert order == ["a", "b"]  # one after another: nothing after the failing job runs
