"""Per-case predictions: the test sets' probabilities and targets, kept for the study report's
bootstrap intervals over cases (``analysis/predictions_<set>.npz``) together with each metric on
each shared resample of the cases (``analysis/bootstrap_<set>.npz``, computed once here so the
report of a large study only aggregates), and the probabilities of ``medxfer predict`` as one
CSV per evaluation set (``predictions/<set>.csv``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override

from medxfer import artifacts
from medxfer.metrics.bootstrap import BOOTSTRAP_TASKS, case_order, cases_digest, resampled_metrics

from .base import analysis_dir, run_folder

__all__ = ["PredictionWriter", "case_probabilities", "write_bootstrap"]


def case_probabilities(probs: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """One row of probabilities per case: ``(B, K)`` as it is; per-pixel probabilities
    ``(B, K, H, W)`` (a segmenter) as each class's mean probability over the image -- the
    expected fraction of its pixels in that class -- counting only the pixels of the field of
    view where ``valid`` ``(B, H, W)`` gives one.

    Example:
        >>> p = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, 1, 2, 2)
        >>> case_probabilities(p).tolist(), case_probabilities(p, p[:, 0] > 0.6).tolist()
        ([[0.5]], [[1.0]])
    """
    if probs.ndim <= 2:
        return probs
    weight = torch.ones_like(probs[:, :1]) if valid is None else valid[:, None].to(probs.dtype)
    dims = tuple(range(2, probs.ndim))
    return (probs * weight).sum(dims) / weight.sum(dims).clamp_min(1)


class PredictionWriter(L.Callback):
    """Per-case predictions of every evaluation set, gathered from all DDP ranks:

    * ``trainer.test`` (``medxfer fit`` / ``test``): ``analysis/predictions_<set>.npz``
      (``probs``, ``target``, ``id``, one array per group attribute, the task's output type
      ``task`` and, for a segmenter, each case's Dice per class ``dice``), and
      ``analysis/bootstrap_<set>.npz``: each of the task's metrics on ``n_resamples`` resamples
      of the cases (:func:`medxfer.metrics.resampled_metrics` over the cases in the order of
      their ids, so every replica tested on the same cases has the same resamples) and the
      digest of the case ids -- what ``medxfer report`` averages over replicas;
    * ``trainer.predict`` (``medxfer predict``, which adds this callback when a config lacks
      it): ``predictions/<set>.csv`` in the run folder, one row per case -- ``id``, then one
      column per label / class holding its probability (sigmoid of a multi-label task's
      logits, softmax of a multi-class one's); for a segmenter, each class's mean per-pixel
      probability inside the field of view (:func:`case_probabilities`; the masks themselves
      are :class:`~medxfer.callbacks.MaskWriter`'s).

    Case ids are keyed hashes of the datasets' ids (which embed patient identifiers), under the
    key in the run folder's ``id_key`` (see :func:`medxfer.artifacts.case_id_key`): the file names
    no patient, and the user joins it back locally with that key.

    Args:
        source_ids: write the datasets' own case ids instead (they may name patients).
        n_resamples: bootstrap resamples stored per test set (0: no ``bootstrap_<set>.npz``).
    """

    def __init__(self, source_ids: bool = False, n_resamples: int = 1000) -> None:
        if n_resamples < 0:
            raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
        self.source_ids = source_ids
        self.n_resamples = n_resamples
        self._store: dict[str, dict[str, list]] = {}

    def _add(self, name: str, probs: torch.Tensor, outputs: dict[str, Any]) -> None:
        s = self._store.setdefault(
            name, {"probs": [], "target": [], "id": [], "groups": [], "dice": []}
        )
        s["probs"].append(probs.detach().float().cpu())
        if "target" in outputs:
            s["target"].append(outputs["target"].detach().float().cpu())
        if outputs.get("dice") is not None:
            s["dice"].append(outputs["dice"].detach().float().cpu())
        s["id"] += [str(i) for i in outputs.get("id", [])]
        groups = outputs.get("groups", {})
        s["groups"] += [{k: str(v[i]) for k, v in groups.items()} for i in range(len(probs))]

    def _gathered(self, trainer: L.Trainer) -> dict[str, list[dict[str, Any]]] | None:
        """Each set's pieces from every rank (global rank zero; None elsewhere)."""
        local = {
            k: {
                "probs": torch.cat(v["probs"]).numpy(),
                "target": torch.cat(v["target"]).numpy() if v["target"] else None,
                "dice": torch.cat(v["dice"]).numpy() if v["dice"] else None,
                "id": v["id"],
                "groups": v["groups"],
            }
            for k, v in self._store.items()
        }
        self._store = {}
        parts: list[Any] = [local]
        if trainer.world_size > 1:
            parts = _gather(local, trainer)
        if not trainer.is_global_zero:
            return None
        return {name: [p[name] for p in parts if name in p] for name in parts[0]}

    def _ids(self, ids: list[str], run_dir: Path) -> list[str]:
        return (
            ids
            if self.source_ids
            else artifacts.keyed_case_ids(ids, artifacts.case_id_key(run_dir))
        )

    # ------------------------------------------------------------------------------ test
    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._store = {}

    @override
    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        self._add(str(outputs.get("set", f"set{dataloader_idx}")), outputs["probs"], outputs)

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sets = self._gathered(trainer)
        if sets is None:
            return
        out = analysis_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        task = str(getattr(pl_module, "output_type", ""))
        for name, pieces in sets.items():
            groups = [g for p in pieces for g in p["groups"]]
            keys = sorted({k for g in groups for k in g})
            dice = [p["dice"] for p in pieces if p["dice"] is not None]
            arrays = {
                artifacts.PROBS: np.concatenate([p["probs"] for p in pieces]),
                artifacts.TARGET: np.concatenate([p["target"] for p in pieces]),
                artifacts.CASE_ID: np.array(
                    self._ids([i for p in pieces for i in p["id"]], out.parent)
                ),
                **{
                    artifacts.GROUP_PREFIX + k: np.array([g.get(k, "") for g in groups])
                    for k in keys
                },
                artifacts.TASK: np.array(task),
                **({artifacts.DICE: np.concatenate(dice)} if dice else {}),
            }
            with artifacts.atomic_path(out / artifacts.predictions_npz(name)) as tmp:
                np.savez(tmp, **arrays)
            if self.n_resamples and task in BOOTSTRAP_TASKS:
                write_bootstrap(out / artifacts.bootstrap_npz(name), arrays, self.n_resamples)

    # --------------------------------------------------------------------------- predict
    @override
    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._store = {}

    @override
    def on_predict_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        valid = batch.get("valid") if isinstance(batch, dict) else None
        probs = case_probabilities(outputs["probs"].detach().float(), valid)
        self._add(str(outputs.get("set", f"set{dataloader_idx}")), probs, outputs)

    @override
    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sets = self._gathered(trainer)
        if sets is None:
            return
        run = run_folder(trainer)
        for name, pieces in sets.items():
            probs = np.concatenate([p["probs"] for p in pieces])
            labels = list(getattr(pl_module, "label_names", None) or []) or [
                f"class{k}" for k in range(probs.shape[1])
            ]
            ids = self._ids([i for p in pieces for i in p["id"]], run)
            path = run / artifacts.PREDICTIONS_DIR / artifacts.predictions_csv(name)
            with artifacts.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([artifacts.CASE_ID, *labels])
                # 9 significant digits: every float32 probability read back exactly
                writer.writerows(
                    [i, *(f"{v:.9g}" for v in row)] for i, row in zip(ids, probs, strict=True)
                )
            print(f"predictions of {len(ids)} cases written to {path}", flush=True)


def write_bootstrap(path: Path, predictions: dict[str, np.ndarray], n_resamples: int) -> Path:
    """Write ``bootstrap_<set>.npz`` of one test set's ``predictions`` (the arrays of its
    ``predictions_<set>.npz``): each of its task's metrics on ``n_resamples`` resamples of the
    cases, taken in the order of their ids (:func:`medxfer.metrics.case_order`), and the
    digest of the ids. The report reads it instead of resampling the predictions again."""
    ids = predictions[artifacts.CASE_ID]
    order = case_order(ids)
    task = str(predictions[artifacts.TASK])
    if task == "segmentation":  # scored by per-case Dice: the per-pixel probabilities unused
        probs = target = None
        dice = predictions[artifacts.DICE][order]
    else:
        probs = predictions[artifacts.PROBS][order]
        target = predictions[artifacts.TARGET][order]
        dice = None
    values = resampled_metrics(probs, target, task, n_resamples, dice=dice)  # type: ignore[arg-type]
    with artifacts.atomic_path(path) as tmp:
        np.savez(tmp, **values, **{artifacts.BOOTSTRAP_CASES: np.array(cases_digest(ids))})
    return path


def _gather(local: dict, trainer: L.Trainer) -> list:
    import torch.distributed as dist

    parts: list = [None] * trainer.world_size
    dist.all_gather_object(parts, local)
    return parts
