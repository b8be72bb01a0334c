"""DataLoader settings shared by every datamodule: the default number of workers on a node, and
moving a batch dict to the device without walking its ids and group names.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

__all__ = ["batch_to_device", "default_workers"]


def default_workers() -> int:
    """DataLoader workers per process: the CPUs this process may use (its affinity, which
    respects cgroup / SLURM pinning, unlike ``os.cpu_count``) shared among the processes of the
    node (``LOCAL_WORLD_SIZE`` under torchrun, ``SLURM_NTASKS_PER_NODE`` under SLURM), minus
    one for the training loop, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_node = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE")
    try:
        procs = max(1, int(per_node)) if per_node else 1
    except ValueError:
        procs = 1
    return min(8, max(0, (cpus or 1) // procs - 1))


def batch_to_device(value: Any, device: torch.device) -> Any:
    """``value`` with its tensors on ``device``; a list or tuple holding no tensor or
    collection (case ids, group names) is returned as it is, without a walk over its items."""
    if isinstance(value, dict):
        return {k: batch_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple) and not any(
        isinstance(v, torch.Tensor | dict | list | tuple) for v in value
    ):
        return value
    return move_data_to_device(value, device)
