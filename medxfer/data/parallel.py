"""Threads for the data code: how many CPUs this process may use, and independent jobs run at
once.

The table readers validate and build their columns with pyarrow's and numpy's kernels, which
release the GIL, after ``pandas.read_csv`` has parsed the file on every core: run one after
another, that work would leave all but one core idle (docs/performance.md has the figures).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["in_parallel", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, which respects cgroup / SLURM pinning
    (``os.cpu_count`` counts the machine's), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def in_parallel(*jobs: Callable[[], Any], threads: int = 2) -> list[Any]:
    """The results of independent jobs (callables without arguments), in order, computed on up
    to ``threads`` threads (no more than the CPUs this process may use; one: in this thread).

    Every job runs to its end; then the first job, in the order given, that raised re-raises,
    so a table with several problems reports the same one as when the jobs run one after
    another. A pool lives for one call only: no thread outlives it, and a process forked
    later (a data-loader worker) inherits none.

    Example:
        >>> in_parallel(lambda: 1 + 1, lambda: "b" * 2)
        [2, 'bb']
    """
    workers = min(threads, len(jobs), usable_cpus())
    if workers < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(workers, thread_name_prefix="medxfer-data") as pool:
        futures = [pool.submit(job) for job in jobs]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]
