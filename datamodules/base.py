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
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from medxfer.data.cache import (
    CacheSettings,
    FileImages,
    ImageCache,
    ImageSource,
    PrepareReport,
    prepare_cache,
)
from medxfer.data.images import ImageDecodeError
from medxfer.data.splits import patient_split
from medxfer.data.subsample import subsample_mask

__all__ = ["ImageTableDataset", "MedxferDataModule", "age_group", "check_images", "image_rows"]

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
        images: where images are read from (default: decoded from their files as grey).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        labels: Sequence[str],
        transform: Callable[[np.ndarray], torch.Tensor],
        group_columns: dict[str, str],
        images: ImageSource | None = None,
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
        self.images = images or FileImages("grey")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images(self.paths[i], context=self.where[i])
        return {
            "image": self.transform(image),
            "target": self.targets[i],
            "groups": {g: v[i] for g, v in self.groups.items()},
            "id": self.ids[i],
        }


def image_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per image file of a table: ``path``, ``line``, ``source`` and ``row``, the
    position of its row in ``table``. Single-image tables have a ``path`` column; case tables
    (exams, derm cases) a ``paths`` list per row, where ``""`` marks a missing view."""
    if "path" in table.columns:
        out = table[["path", "line", "source"]].assign(row=np.arange(len(table)))
    else:
        out = table[["paths", "line", "source"]].assign(row=np.arange(len(table)))
        out = out.explode("paths").rename(columns={"paths": "path"})
        out = out[out["path"].notna() & (out["path"] != "")]
    return out.reset_index(drop=True)


def check_images(
    table: pd.DataFrame,
    skip_bad: bool,
    decode: bool,
    what: str,
    images: ImageSource | None = None,
) -> pd.DataFrame:
    """The rows of ``table`` whose images all exist (and decode, when ``decode``).

    Without ``skip_bad`` the first bad files raise, naming file and CSV line; with it the rows
    holding them are dropped, counted and logged. ``images`` is where they are read from
    (default: their files, as grey); with a cache, "exists" means "prepared without error".
    """
    images = images or FileImages("grey")
    files = image_rows(table)
    bad: list[str] = []
    keep = np.ones(len(table), dtype=bool)
    for path, line, src, row in files.itertuples(index=False):
        try:
            images.check(path, context=f"line {line} of {src}", decode=decode or skip_bad)
        except ImageDecodeError as err:
            keep[row] = False
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
            "%s: skipped %d row(s) of %d with a bad image; first: %s",
            what,
            len(table) - int(keep.sum()),
            len(table),
            bad[0],
        )
    out = table[keep]
    if out.empty:
        raise ValueError(
            f"{what}: no images left after skip_bad_images dropped {len(bad)} bad file(s)"
        )
    return out


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


class MedxferDataModule(L.LightningDataModule):
    """Base of medxfer datamodules: loader settings and what the task needs to know.

    Subclasses set :attr:`reader` (how their images decode), :attr:`cache_side` (the side their
    transform resizes to first) and :meth:`read_table`; the base then reads images from their
    files or, with ``cache``, from an HDF5 cache written by ``medxfer prepare``.

    Args:
        batch_size: training batch size (per process).
        eval_batch_size: validation / test batch size (default: ``batch_size``).
        num_workers: DataLoader workers per process (default: the CPUs this process may use,
            divided among the processes on the node, minus one for the main loop, at most 8).
        pin_memory: pin host memory (default: when CUDA is available).
        persistent_workers: keep workers between epochs (default: when there are workers).
        prefetch_factor: batches each worker loads ahead (default: PyTorch's 2).
        train_fraction: train on this class-balanced, nested fraction of the training split
            (data-efficiency studies; see :mod:`medxfer.data.subsample`).
        shots_per_class: train on k cases per class (few-shot transfer).
        subsample_seed: seed of the subsets (one seed gives nested fractions).
        cache: an HDF5 image cache built by ``medxfer prepare`` with this datamodule's settings;
            images are then read from it (the source files are not needed).
    """

    #: Decoder of this datamodule's images (a name in :data:`medxfer.data.cache.READERS`).
    reader: ClassVar[str] = "grey"

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        train_fraction: float | None = None,
        shots_per_class: int | None = None,
        subsample_seed: int = 0,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__()
        if train_fraction is not None and shots_per_class is not None:
            raise ValueError("give train_fraction or shots_per_class, not both")
        self.train_fraction = train_fraction
        self.shots_per_class = shots_per_class
        self.subsample_seed = subsample_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers if num_workers is not None else default_workers()
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = (
            self.num_workers > 0 if persistent_workers is None else persistent_workers
        )
        self.prefetch_factor = prefetch_factor
        self.cache = cache
        self._images: ImageSource | None = None
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

    # Images -----------------------------------------------------------------------------------
    @property
    def cache_side(self) -> int:
        """The side images are resized to before anything else (what a cache stores)."""
        raise NotImplementedError

    def cache_settings(self) -> CacheSettings:
        """The settings a cache of this datamodule's images must have been built with."""
        return CacheSettings(self.reader, self.cache_side)

    @property
    def images(self) -> ImageSource:
        """Where datasets read images: the cache when one is set (checked on first use), else
        the files."""
        if self._images is None:
            self._images = (
                ImageCache(self.cache, self.cache_settings())
                if self.cache
                else FileImages(self.reader)
            )
        return self._images

    def reset(self) -> None:
        """Forget the datasets and the image source, so the next ``setup`` rebuilds them (after
        a change of settings, e.g. the resolution set by BiT-HyperRule)."""
        self.train_set, self.val_set, self.test_sets, self._images = None, None, {}, None

    def read_table(self, table: Any) -> pd.DataFrame:
        """Read one of this datamodule's tables (as given in its arguments) into rows with
        ``line`` and ``source``, and ``path`` (single images) or ``paths`` (cases)."""
        raise NotImplementedError

    def all_tables(self) -> pd.DataFrame:
        """Every table this datamodule reads (train, explicit val / test, shifted), with a
        ``table`` column naming each: what ``medxfer prepare`` caches."""
        named = {part: t for part, t in self.tables.items() if t is not None}
        named.update({f"shifted/{k}": t for k, t in self.shifted.items()})
        return pd.concat(
            [self.read_table(t).assign(table=name) for name, t in named.items()],
            ignore_index=True,
        )

    def build_cache(
        self,
        path: str | os.PathLike[str],
        bits: int | None = None,
        workers: int | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> PrepareReport:
        """Build, or continue, the image cache of every table this datamodule reads (what
        ``medxfer prepare`` runs): its images at :meth:`cache_settings`, the tables beside them,
        bad images recorded when ``skip_bad_images`` is set. ``workers`` defaults to
        ``num_workers``; see :func:`medxfer.data.cache.prepare_cache` for the rest."""
        tables = self.all_tables()
        return prepare_cache(
            path,
            image_rows(tables),
            self.cache_settings(),
            bits=bits,
            table=tables.assign(paths=tables["paths"].map("|".join))
            if "paths" in tables
            else tables,
            tables=sorted({str(s) for s in tables["source"]}),
            skip_bad=bool(getattr(self.hparams, "skip_bad_images", False)),
            workers=self.num_workers if workers is None else workers,
            batch_size=batch_size,
            progress=progress,
        )

    def checked(self, table: pd.DataFrame, what: str, decode: bool = False) -> pd.DataFrame:
        """The rows of ``table`` whose images are readable (:func:`check_images` with this
        datamodule's ``skip_bad_images`` and image source)."""
        skip = bool(getattr(self.hparams, "skip_bad_images", False))
        return check_images(table, skip, decode, what, self.images)

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
            drop_last=False,
            **self.loader_settings(),
        )

    def loader_settings(self) -> dict[str, Any]:
        """Worker, pinning and prefetch arguments of every DataLoader of this datamodule."""
        workers = self.num_workers
        return {
            "num_workers": workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers and workers > 0,
            "prefetch_factor": self.prefetch_factor if workers > 0 else None,
        }

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
