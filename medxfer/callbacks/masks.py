"""Predicted segmentation masks as PNG files, for ``medxfer predict`` with a ``Segmenter``: at
each image's native size, cut to its field of view, as the masks they are compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from medxfer import artifacts

__all__ = ["MaskWriter"]


class MaskWriter(BasePredictionWriter):
    """Write each predicted mask as a PNG: ``<out_dir>/<set>/<id>_<class>.png`` (0 / 255 where the
    probability reaches ``threshold``), or, for a multi-class task, ``<id>.png`` holding the
    arg-max class index per pixel. ``<id>`` is the keyed hash of the dataset's case id (see
    :class:`~medxfer.callbacks.PredictionWriter`; the key is the run folder's ``id_key``).

    Masks are written at each image's native size (the batch's ``size``, ``(B, 2)``): the
    probabilities are resized back bilinear (``align_corners=False``) and then thresholded (or
    arg-maxed), as the ``Segmenter`` scores them. Pixels outside the field of view are
    background (0): the exact one when the batch carries ``native_valid`` (the datamodule's
    ``native_resolution``), else the model-resolution ``valid`` resized nearest-neighbour. A
    batch without ``size`` is written at the model's resolution.

    Args:
        out_dir: folder to write into (default: ``predictions/`` in the run folder).
        threshold: probability from which a pixel is foreground (binary / multi-label).
        source_ids: name files by the datasets' own case ids (they may name patients).

    Example (a config's trainer section, or on the command line)::

        medxfer predict -c configs/seg_demo.yaml --ckpt_path best.ckpt \\
            --trainer.callbacks+=medxfer.callbacks.MaskWriter
    """

    def __init__(
        self, out_dir: str | None = None, threshold: float = 0.5, source_ids: bool = False
    ) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self.threshold = threshold
        self.source_ids = source_ids
        self._key: bytes | None = None
        self._run: Path | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Find the run folder and read (rank 0: create first) its case-id key, so that every
        rank writes into one folder under one key. The folder is asked for here, once, on every
        rank: ``trainer.log_dir`` broadcasts rank 0's answer, so asking on one rank only, or
        per batch (ranks may predict different numbers of batches), would leave ranks waiting
        on each other."""
        self._run = Path(trainer.log_dir or trainer.default_root_dir)
        if self.source_ids:
            return
        if trainer.is_global_zero:
            artifacts.case_id_key(self._run)
        trainer.strategy.barrier()
        self._key = artifacts.case_id_key(self._run)

    def _run_dir(self, trainer: L.Trainer) -> Path:
        return self._run or Path(trainer.default_root_dir)

    def _folder(self, trainer: L.Trainer, dataloader_idx: int) -> Path:
        root = Path(self.out_dir or self._run_dir(trainer) / artifacts.PREDICTIONS_DIR)
        names = list(getattr(trainer.datamodule, "eval_names", []) or [])
        name = names[dataloader_idx] if dataloader_idx < len(names) else f"set{dataloader_idx}"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @override
    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        from PIL import Image

        probs = prediction["probs"].detach().float().cpu()
        if probs.ndim != 4:
            raise ValueError(
                f"MaskWriter needs per-pixel probabilities (B, K, H, W), got {tuple(probs.shape)}"
            )
        folder = self._folder(trainer, dataloader_idx)
        multiclass = bool(getattr(pl_module.hparams, "multiclass", False))
        names = list(getattr(pl_module, "label_names", [])) or [
            f"class{k}" for k in range(probs.shape[1])
        ]
        ids = [str(i) for i in prediction["id"]]
        if not self.source_ids:
            if self._key is None:
                self._key = artifacts.case_id_key(self._run_dir(trainer))
            ids = artifacts.keyed_case_ids(ids, self._key)
        for i, case in enumerate(ids):
            p, fov = self._native(probs, batch, i)
            if multiclass:
                classes = p.argmax(0).numpy().astype(np.uint8) * fov
                with artifacts.atomic_path(folder / f"{case}.png") as tmp:
                    Image.fromarray(classes).save(tmp)
                continue
            for name, channel in zip(names, p, strict=True):
                mask = ((channel.numpy() >= self.threshold) & fov).astype(np.uint8) * 255
                with artifacts.atomic_path(folder / f"{case}_{name}.png") as tmp:
                    Image.fromarray(mask).save(tmp)

    @staticmethod
    def _native(probs: torch.Tensor, batch: Any, i: int) -> tuple[torch.Tensor, np.ndarray]:
        """Image ``i``'s probabilities ``(K, H, W)`` at its native size and its field of view
        there, bool ``(H, W)`` (see the class docstring)."""
        batch = batch if isinstance(batch, dict) else {}
        p = probs[i : i + 1]
        if batch.get("size") is not None:
            h, w = (int(v) for v in batch["size"][i])
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        native = batch.get("native_valid")
        if native is not None and native[i] is not None:
            fov = native[i].detach().cpu()
        elif batch.get("valid") is not None:
            valid = batch["valid"][i : i + 1, None].detach().cpu().float()
            fov = F.interpolate(valid, size=p.shape[-2:], mode="nearest")[0, 0] > 0
        else:
            fov = torch.ones(p.shape[-2:], dtype=torch.bool)
        return p[0], fov.bool().numpy()
