"""The base datamodule every medxfer datamodule derives from, and the image-table dataset.

:class:`MedxferDataModule` declares what the CLI links into the task (``num_classes``,
``label_names``, ``channels``) and the names of the evaluation sets, so a task logs
``test/<name>/<metric>`` for each test dataloader without knowing the datamodule.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from medxfer.data.images import ImageDecodeError, read_grey_image
from medxfer.data.splits import patient_split
from medxfer.data.subsample import subsample_mask

__all__ = ["ImageTableDataset", "MedxferDataModule", "age_group"]

log = logging.getLogger(__name__)


def age_group(age: float, edges: Sequence[float]) -> str:
    """The age bin of ``age`` for bin ``edges`` (e.g. ``(40, 60, 80)`` -> ``"<40"``,
    ``"40-59"``, ``"60-79"``, ``"80+"``); ``"unknown"`` for NaN."""
    if age is None or np.isnan(age):
        return "unknown"
    edges = sorted(edges)
    if not edges or age < edges[0]:
        return f"<{edges[0]:g}" if edges else "all"
    for lo, hi in itertools.pairwise(edges):
        if lo <= age < hi:
            return f"{lo:g}-{hi - 1:g}"
    return f"{edges[-1]:g}+"


class ImageTableDataset(Dataset):
    """One sample per table row: ``{"image", "target", "groups", "id"}`` (DESIGN.md).

    Args:
        table: rows with ``path``, ``id``, ``source``, ``line`` and the label columns.
        labels: label columns, in target order.
        transform: grey ``(H, W)`` float array -> tensor ``(C, H, W)``.
        group_columns: batch group name -> table column.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        labels: Sequence[str],
        transform: Callable[[np.ndarray], torch.Tensor],
        group_columns: dict[str, str],
    ) -> None:
        self.paths = table["path"].tolist()
        self.where = [
            f"line {line} of {src}"
            for line, src in zip(table["line"], table["source"], strict=True)
        ]
        self.ids = table["id"].astype(str).tolist()
        self.targets = torch.tensor(table[list(labels)].to_numpy(dtype=np.float32))
        self.groups = {g: table[c].astype(str).tolist() for g, c in group_columns.items()}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = read_grey_image(self.paths[i], context=self.where[i])
        return {
            "image": self.transform(image),
            "target": self.targets[i],
            "groups": {g: v[i] for g, v in self.groups.items()},
            "id": self.ids[i],
        }


def check_images(table: pd.DataFrame, skip_bad: bool, decode: bool, what: str) -> pd.DataFrame:
    """Check every image of ``table`` exists (and decodes, when ``decode`` or ``skip_bad``).

    Without ``skip_bad`` the first bad files raise, naming file and CSV line; with it they are
    dropped, counted and logged.
    """
    bad: list[str] = []
    keep = np.ones(len(table), dtype=bool)
    for k, (path, line, src) in enumerate(
        zip(table["path"], table["line"], table["source"], strict=True)
    ):
        try:
            if decode or skip_bad:
                read_grey_image(path, context=f"line {line} of {src}")
            elif not os.path.isfile(path):
                raise ImageDecodeError(f"image not found: {path} (line {line} of {src})")
        except ImageDecodeError as err:
            keep[k] = False
            bad.append(str(err))
            if not skip_bad and len(bad) >= 5:
                break
    if bad and not skip_bad:
        raise ImageDecodeError(
            f"{what}: {len(bad)}{'+' if len(bad) >= 5 else ''} bad image(s); first: "
            + "; ".join(bad)
            + ". Fix the files or set skip_bad_images=true to skip (and count) them."
        )
    if bad:
        log.warning(
            "%s: skipped %d bad image(s) of %d; first: %s", what, len(bad), len(table), bad[0]
        )
    out = table[keep]
    if out.empty:
        raise ValueError(
            f"{what}: no images left after skip_bad_images dropped {len(bad)} bad file(s)"
        )
    return out


class MedxferDataModule(L.LightningDataModule):
    """Base of medxfer datamodules: loader settings and what the task needs to know.

    Args:
        batch_size: training batch size (per process).
        eval_batch_size: validation / test batch size (default: ``batch_size``).
        num_workers: DataLoader workers (default: ``min(8, cpu count - 1)``).
        pin_memory: pin host memory (default: when CUDA is available).
        train_fraction: train on this class-balanced, nested fraction of the training split
            (data-efficiency studies; see :mod:`medxfer.data.subsample`).
        shots_per_class: train on k cases per class (few-shot transfer).
        subsample_seed: seed of the subsets (one seed gives nested fractions).
    """

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        train_fraction: float | None = None,
        shots_per_class: int | None = None,
        subsample_seed: int = 0,
    ) -> None:
        super().__init__()
        if train_fraction is not None and shots_per_class is not None:
            raise ValueError("give train_fraction or shots_per_class, not both")
        self.train_fraction = train_fraction
        self.shots_per_class = shots_per_class
        self.subsample_seed = subsample_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = (
            num_workers if num_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}

    def subsample_train(
        self, table: pd.DataFrame, strata: Sequence[object], what: str
    ) -> pd.DataFrame:
        """The training rows kept by ``train_fraction`` / ``shots_per_class`` (all by default),
        subsampled within each stratum (class)."""
        if self.train_fraction is None and self.shots_per_class is None:
            return table
        keep = subsample_mask(
            strata, self.train_fraction, self.shots_per_class, self.subsample_seed
        )
        log.info(
            "%s: kept %d of %d training cases (train_fraction=%s, shots_per_class=%s, seed %d)",
            what,
            int(keep.sum()),
            len(keep),
            self.train_fraction,
            self.shots_per_class,
            self.subsample_seed,
        )
        return table[keep]

    # Tables and splits -----------------------------------------------------------------------
    def set_tables(
        self,
        train: Any,
        val: Any,
        test: Any,
        shifted: dict[str, Any] | None,
        name: str,
        split: Sequence[float],
    ) -> None:
        """Record the training table, optional explicit val / test tables (whose fractions in
        ``split`` must then be 0) and the shifted sets."""
        if (val is not None and split[1] != 0) or (test is not None and split[2] != 0):
            raise ValueError(
                f"split={tuple(split)} re-splits val/test from train, but explicit val/test tables were given: set their fractions to 0"
            )
        self.tables = {"train": train, "val": val, "test": test}
        self.shifted = dict(shifted or {})
        if name in self.shifted:
            raise ValueError(f"shifted set name {name!r} equals the in-distribution name")
        self.name = name

    def split_tables(
        self,
        read: Callable[[Any], pd.DataFrame],
        split: Sequence[float],
        seed: int,
        read_eval: Callable[[Any], pd.DataFrame] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """Train / val / test tables: the training table re-split by patient, with explicit val
        / test tables (read with ``read_eval``, default ``read``) in place of their parts."""
        parts = dict(
            zip(
                ("train", "val", "test"),
                patient_split(read(self.tables["train"]), split, seed),
                strict=True,
            )
        )
        for part in ("val", "test"):
            if self.tables[part] is not None:
                parts[part] = (read_eval or read)(self.tables[part])
        return parts

    # What the CLI links into the task -------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """Names of the K outputs, in target order."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """K, the width of ``target``."""
        return len(self.label_names)

    @property
    def channels(self) -> int:
        """Image channels the datamodule produces."""
        return 3

    @property
    def eval_names(self) -> list[str]:
        """Names of the test dataloaders, in order (the in-distribution set first)."""
        return [self.name, *self.shifted] if hasattr(self, "name") else list(self.test_sets)

    # Loaders ----------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """A loader with this datamodule's settings. Under DDP, evaluation loaders deal each
        case to exactly one rank (no padding with repeated cases), so metrics gathered across
        ranks equal the single-process ones."""
        trainer = self.trainer
        sampler = None
        if not train and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup('fit') first"
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, train=False) for ds in self.test_sets.values()]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()
