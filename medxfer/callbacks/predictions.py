"""Per-case test predictions, kept for the study report's bootstrap intervals over cases."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override

from medxfer import artifacts

from .base import analysis_dir

__all__ = ["PredictionWriter"]


class PredictionWriter(L.Callback):
    """Write ``analysis/predictions_<set>.npz`` (``probs``, ``target``, ``id``, and one array per
    group attribute) for every test set, gathered from all DDP ranks.

    Case ids are keyed hashes of the datasets' ids (which embed patient identifiers), under the
    key in the run folder's ``id_key`` (see :func:`medxfer.artifacts.case_id_key`): the file names
    no patient, and the user joins it back locally with that key.

    Args:
        source_ids: write the datasets' own case ids instead (they may name patients).
    """

    def __init__(self, source_ids: bool = False) -> None:
        self.source_ids = source_ids
        self._store: dict[str, dict[str, list]] = {}

    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._store = {}

    @override
    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        s = self._store.setdefault(
            str(outputs.get("set", f"set{dataloader_idx}")),
            {"probs": [], "target": [], "id": [], "groups": []},
        )
        s["probs"].append(outputs["probs"].detach().float().cpu())
        s["target"].append(outputs["target"].detach().float().cpu())
        s["id"] += [str(i) for i in outputs.get("id", [])]
        groups = outputs.get("groups", {})
        n = len(outputs["probs"])
        s["groups"] += [{k: str(v[i]) for k, v in groups.items()} for i in range(n)]

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        local = {
            k: {
                "probs": torch.cat(v["probs"]).numpy(),
                "target": torch.cat(v["target"]).numpy(),
                "id": v["id"],
                "groups": v["groups"],
            }
            for k, v in self._store.items()
        }
        parts: list[Any] = [local]
        if trainer.world_size > 1:
            parts = _gather(local, trainer)
        if not trainer.is_global_zero:
            return
        out = analysis_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        key = None if self.source_ids else artifacts.case_id_key(out.parent)
        for name in parts[0]:
            pieces = [p[name] for p in parts if name in p]
            groups = [g for p in pieces for g in p["groups"]]
            ids = [i for p in pieces for i in p["id"]]
            keys = sorted({k for g in groups for k in g})
            arrays = {
                artifacts.PROBS: np.concatenate([p["probs"] for p in pieces]),
                artifacts.TARGET: np.concatenate([p["target"] for p in pieces]),
                artifacts.CASE_ID: np.array(
                    ids if key is None else artifacts.keyed_case_ids(ids, key)
                ),
                **{
                    artifacts.GROUP_PREFIX + k: np.array([g.get(k, "") for g in groups])
                    for k in keys
                },
            }
            with artifacts.atomic_path(out / artifacts.predictions_npz(name)) as tmp:
                np.savez(tmp, **arrays)


def _gather(local: dict, trainer: L.Trainer) -> list:
    import torch.distributed as dist

    parts: list = [None] * trainer.world_size
    dist.all_gather_object(parts, local)
    return parts
