"""The data template every medxfer datamodule follows.

:class:`MedxferDataModule` owns ``setup()`` (tables -> patient split -> label space ->
subsampling -> image checks -> datasets -> loaders); a modality supplies a table reader, a
transform and a few hooks (see docs/adding-a-dataset.md). It declares what the CLI links into
the task (``num_classes``, ``label_names``, ``channels``) and the names of the evaluation sets,
so a task logs ``test/<name>/<metric>`` for each test dataloader without knowing the datamodule.
The one dataset (:class:`~medxfer.data.dataset.ImageTableDataset`), the image checks
(:mod:`medxfer.data.checks`) and the loader settings (:mod:`medxfer.data.loaders`) live in the data
layer; this module is the template and its loaders' resume state.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from medxfer.data.cache import (
    CacheSettings,
    FileImages,
    ImageCache,
    ImageSource,
    LabelDecoder,
    PrepareReport,
    prepare_cache,
)
from medxfer.data.checks import check_images, image_rows
from medxfer.data.dataset import ImageTableDataset
from medxfer.data.loaders import batch_to_device, default_workers
from medxfer.data.splits import patient_split
from medxfer.data.subsample import multilabel_strata, subsample_mask
from medxfer.data.tables import TableError
from medxfer.errors import ConfigError
from medxfer.resume import KeyedDataset, ResumableLoader, ResumableSampler, run_seed
from medxfer.transforms import DatasetTransform, SeededTransform, TenCropTransform

__all__ = ["MedxferDataModule", "check_fraction", "check_positive"]

log = logging.getLogger(__name__)


def check_positive(key: str, value: Any, optional: bool = True) -> None:
    """Refuse an option that must be a positive integer (``batch_size``, ``image_size`` ...):
    one :class:`ConfigError` naming the key and the allowed range, raised where the option is
    read instead of a traceback from the DataLoader, albumentations or a crop."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data option {key}={value!r}: must be an integer >= 1")


def check_fraction(key: str, value: Any) -> None:
    """Refuse a fraction outside ``(0, 1]`` (``train_fraction``): one :class:`ConfigError`
    naming the key and the allowed range."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"data option {key}={value!r}: must be in (0, 1]")


def _epoch_progress(trainer: L.Trainer) -> tuple[int, bool]:
    """The batches of the current epoch the model has trained on, and whether the epoch is
    complete: where a resumed run's loader continues (:class:`ResumableLoader`)."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return done, done >= trainer.num_training_batches


class MedxferDataModule(L.LightningDataModule, ABC):
    """The data template every medxfer datamodule follows.

    The template owns :meth:`setup`: read the training table -> patient-level re-split (explicit
    val / test tables replace their parts) -> the label space from the training split ->
    subsample the training split (``train_fraction`` / ``shots_per_class``) -> image checks ->
    one :class:`ImageTableDataset` per split and per shifted set -> loaders. A datamodule
    supplies only what differs, through these hooks:

    * :meth:`read_table` (abstract): one table as given in the arguments -> validated rows with
      ``id``, ``patient_id``, ``line``, ``source``, ``path`` (one image) or ``paths`` (a case,
      with ``mask`` for fixed view slots), the label / target columns and the group columns;
    * :meth:`transform` (abstract): the training or evaluation transform (uint8 or float16
      pixels; the task normalises them, the data never asks the model how);
    * :attr:`cache_side` (abstract): the side the transform first resizes to (what a cache
      stores);
    * :meth:`fit_labels`: the label names, from the training split (default: fixed ``labels``);
    * :meth:`strata`: the subsampling stratum of each training row (default: rarest positive
      label);
    * :meth:`targets`: the ``(N, K)`` targets of a table (default: its label columns);
    * :meth:`dataset_options` (and :attr:`dataset_class`): the multi-image layout, or a dataset
      subclass and its arguments;
    * :meth:`train_sampler`: a training sampler (default: shuffling).

    Attributes set by the template (read them, don't set them): ``tables`` (``train`` / ``val``
    / ``test`` as given), ``shifted`` (name -> table), ``name``, ``train_set``, ``val_set``,
    ``test_sets`` (name -> dataset, the in-distribution set first).

    Args:
        train: the training table; re-split by patient into train / val / test by ``split``.
        val: an explicit validation table (then ``split[1]`` must be 0).
        test: an explicit in-distribution test table (then ``split[2]`` must be 0).
        shifted: name -> table of each shifted test set, logged as ``test/<name>/...``.
        name: the in-distribution set's name in logged keys (default: the datamodule's
            ``default_name``, e.g. ``chexpert``).
        split: (train, val, test) fractions of the patient-level re-split (default: the
            datamodule's ``default_split``).
        split_seed: seed of the re-split.
        stratify: stratify the patient-level re-split by the datamodule's :meth:`split_strata`
            (class, or each label for multi-label targets; iterative stratification over
            patients, :func:`~medxfer.data.splits.patient_split`), so a rare class lands in
            every part in proportion (default: the datamodule's :attr:`default_stratify`).
        seed: seed of augmentation and sampling.
        skip_bad_images: drop (count and log) rows with a missing or undecodable image instead
            of failing.
        verify_images: decode every image at setup, in ``num_workers`` threads, so a corrupt
            file is an error naming it before training starts, not in whichever epoch first
            draws it (default: only check the files exist; with a ``cache`` the images were
            decoded when it was built).
        drop_duplicates: drop repeated rows of the same image or case (counted and logged)
            instead of failing; copies that differ stay an error.
        unknown_sex: read a sex value outside the documented list
            (:data:`~medxfer.data.tables.SEX_VALUES`) as ``Unknown`` (counted and logged)
            instead of failing.
        batch_size: training batch size (per process; default: the datamodule's
            ``default_batch_size``).
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
        ten_crop: test-time ten-crop of the test (and shifted, and predict) sets: each image
            resized to ``round(image_size * 256 / 224)`` and cut into the four corner and
            centre crops and their flips (:class:`~medxfer.transforms.TenCropTransform`); the
            task scores the mean of the ten crops' probabilities (the classification test
            protocol of Hosseinzadeh Taher et al., 2021). Validation stays one centre crop.
            Single-image classification only.
    """

    #: The defaults of ``name``, ``split`` and ``batch_size`` for this datamodule (a modality
    #: sets its own; the arguments are declared once, here, and reach the base through a
    #: subclass's ``**kwargs``, which jsonargparse resolves to this signature).
    default_name: ClassVar[str] = "data"
    default_split: ClassVar[tuple[float, float, float]] = (0.7, 0.1, 0.2)
    default_batch_size: ClassVar[int] = 32

    #: Decoder of this datamodule's images (a name declared in the ``medxfer.image_readers``
    #: entry points, :func:`medxfer.data.images.image_reader`).
    reader: ClassVar[str] = "grey"

    #: The dataset class of every split (a subclass of :class:`ImageTableDataset` adds, e.g.,
    #: masks); :meth:`dataset_options` gives its extra arguments.
    dataset_class: ClassVar[type[ImageTableDataset]] = ImageTableDataset

    def __init__(
        self,
        train: Any,
        val: Any = None,
        test: Any = None,
        shifted: dict[str, Any] | None = None,
        name: str | None = None,
        split: Sequence[float] | None = None,
        split_seed: int = 0,
        stratify: bool | None = None,
        seed: int = 0,
        skip_bad_images: bool = False,
        verify_images: bool = False,
        drop_duplicates: bool = False,
        unknown_sex: bool = False,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        train_fraction: float | None = None,
        shots_per_class: int | None = None,
        subsample_seed: int = 0,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        cache: str | None = None,
        ten_crop: bool = False,
    ) -> None:
        super().__init__()
        if train_fraction is not None and shots_per_class is not None:
            raise ValueError("give train_fraction or shots_per_class, not both")
        check_fraction("train_fraction", train_fraction)
        for key, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("shots_per_class", shots_per_class),
            ("prefetch_factor", prefetch_factor),
        ):
            check_positive(key, value)
        if num_workers is not None and (isinstance(num_workers, bool) or num_workers < 0):
            raise ConfigError(f"data option num_workers={num_workers!r}: must be an integer >= 0")
        name = self.default_name if name is None else name
        split = tuple(float(f) for f in (split if split is not None else self.default_split))
        if (
            len(split) != 3
            or not all(math.isfinite(f) and f >= 0 for f in split)
            or not math.isclose(sum(split), 1.0)
        ):
            raise ConfigError(
                f"data option split={list(split)}: must be three fractions (train, val, test) "
                ">= 0 summing to 1"
            )
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if (val is not None and split[1] != 0) or (test is not None and split[2] != 0):
            raise ValueError(
                f"split={split} re-splits val/test from train, but explicit val/test tables were given: set their fractions to 0"
            )
        self.tables: dict[str, Any] = {"train": train, "val": val, "test": test}
        self.shifted: dict[str, Any] = dict(shifted or {})
        if name in self.shifted:
            raise ValueError(f"shifted set name {name!r} equals the in-distribution name")
        self.name = name
        self.split = split
        self.split_seed = split_seed
        self.stratify = stratify
        self.seed = seed
        self.skip_bad_images = skip_bad_images
        self.verify_images = verify_images
        self.drop_duplicates = drop_duplicates
        self.unknown_sex = unknown_sex
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
        self.ten_crop = ten_crop
        self._images: ImageSource | None = None
        self._parts: dict[str, pd.DataFrame] | None = None
        self._labels: list[str] | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}
        self._resumable: ResumableLoader | None = None
        self._loader_state: dict[str, int] | None = None

    def save_hyperparameters(self, *args: Any, frame: Any = None, **kwargs: Any) -> None:
        """Lightning's ``save_hyperparameters`` (of the subclass's ``__init__`` frame), then the
        options every modality declares for itself checked in one place: ``image_size`` and
        ``resize`` are integers >= 1 and a crop never exceeds the side it is cut from
        (``resize >= image_size``); each failure is one :class:`ConfigError` naming the key."""
        frame = frame if frame is not None else inspect.currentframe().f_back  # type: ignore[union-attr]
        super().save_hyperparameters(*args, frame=frame, **kwargs)
        hp = self.hparams
        for key in ("image_size", "resize"):
            check_positive(key, hp.get(key))
        size, resize = hp.get("image_size"), hp.get("resize")
        if isinstance(size, int) and isinstance(resize, int) and resize < size:
            raise ConfigError(
                f"data option resize={resize}: must be >= image_size ({size}), the crop cut "
                "from the resized image"
            )

    # Hooks -----------------------------------------------------------------------------------
    @abstractmethod
    def read_table(self, table: Any, evaluation: bool = False) -> pd.DataFrame:
        """Read one of this datamodule's tables (as given in its arguments) into validated rows
        (see the class docstring); ``evaluation``: read it with the evaluation label policy."""

    @abstractmethod
    def transform(self, train: bool) -> DatasetTransform:
        """The image transform of training (``train``) or evaluation: augmented pixels as
        uint8 (float16 where the modality keeps more than 8 bits), not normalised -- the task
        normalises them on the device with its weights' mean / std."""

    @property
    @abstractmethod
    def cache_side(self) -> int:
        """The side images are resized to before anything else (what a cache stores)."""

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        """The names of the K outputs, from the training split (before subsampling, so nested
        subsets share one label space). Default: the datamodule's fixed ``labels``."""
        return list(self.labels)  # type: ignore[attr-defined]

    def strata(self, train: pd.DataFrame) -> Sequence[object]:
        """The stratum of each training row for ``train_fraction`` / ``shots_per_class``
        (default: its rarest positive label, :func:`~medxfer.data.subsample.multilabel_strata`)."""
        return multilabel_strata(self.targets(train, "train"), self.label_names)

    def targets(self, table: pd.DataFrame, what: str) -> np.ndarray:
        """The ``(N, K)`` float targets of a table (default: its label columns; NaN unknown)."""
        return table[self.label_names].to_numpy(dtype=np.float32)

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Extra :class:`ImageTableDataset` arguments: ``views``, ``pack``, ``shuffle``,
        ``swap``, ``swap_p`` (default: single images)."""
        return {}

    def group_columns(self) -> dict[str, str]:
        """Batch group name -> table column of the subgroup attributes (default: none)."""
        return {}

    def train_sampler(self, dataset: ImageTableDataset) -> Sampler | None:
        """The training sampler (default: None, a permutation). The template re-seeds its
        ``generator`` from ``(seed, seed_everything, epoch)`` every epoch and splits its order
        across DDP ranks (:class:`~medxfer.resume.ResumableSampler`), so a resumed run draws
        the same order."""
        return None

    @property
    def default_stratify(self) -> bool:
        """Whether the re-split is stratified when ``stratify`` is not given (default: no; the
        generic table datamodule stratifies class targets)."""
        return False

    def split_strata(self, table: pd.DataFrame) -> pd.DataFrame | None:
        """Indicators (0/1, one column per class or label, ``table``'s index) of each row's
        class or labels, by which ``stratify`` balances the re-split (default: None, no
        strata: ``stratify: true`` is then an error)."""
        return None

    def split_table(self, table: pd.DataFrame) -> list[pd.DataFrame]:
        """The training table's train / val / test parts (default: the patient-level re-split
        by ``split`` and ``split_seed``, :func:`~medxfer.data.splits.patient_split`, stratified
        by :meth:`split_strata` when ``stratify`` asks)."""
        stratify = self.default_stratify if self.stratify is None else self.stratify
        if not stratify:
            return patient_split(table, self.split, self.split_seed)
        strata = self.split_strata(table)
        if strata is None:
            raise ConfigError(
                f"stratify: {type(self).__name__} gives no strata to stratify the split by; "
                "set stratify: false"
            )
        parts = patient_split(table, self.split, self.split_seed, strata=strata.to_numpy())
        counts = [(strata.loc[p.index] > 0.5).sum(axis=0) for p in parts]
        log.info(
            "%s: split stratified at patient level; rows per stratum (train/val/test): %s",
            self.name,
            ", ".join(f"{c} {'/'.join(str(int(n[c])) for n in counts)}" for c in strata.columns),
        )
        return parts

    def split_description(self) -> str:
        """How the parts were made, for the message of an empty split."""
        return "reading, filtering and the patient split"

    def table_name(self, table: Any) -> str:
        """How messages name one of this datamodule's tables (default: ``str(table)``)."""
        return str(table)

    def table_paths(self, table: Any) -> list[str]:
        """The files one table argument reads, each checked to exist before reading (default:
        :meth:`table_name`; a table of several sources names each)."""
        return [self.table_name(table)]

    def test_parts(self, test: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The in-distribution test sets, by name, from the test part (default: one set,
        :attr:`name`; a datamodule over several sources tests each on its own)."""
        return {self.name: test}

    @property
    def test_names(self) -> list[str]:
        """The names :meth:`test_parts` gives, known from the arguments alone (the task logs
        ``test/<name>/...`` for each before any table is read)."""
        return [self.name]

    def evaluation_differs(self) -> bool:
        """Whether evaluation reads label values differently from training (then the re-split
        val / test parts are read again with ``evaluation=True``)."""
        return False

    # Template --------------------------------------------------------------------------------
    def prepare_tables(self) -> dict[str, pd.DataFrame]:
        """Read and split the tables and fix the label space (once; no image is touched): the
        train / val / test parts before subsampling."""
        if self._parts is not None:
            return self._parts
        train = self._read(self.tables["train"], "training")
        self._check_not_empty(
            train, f"{self.name} training table {self.table_name(self.tables['train'])}", "reading"
        )
        parts = dict(zip(("train", "val", "test"), self.split_table(train), strict=True))
        if self.evaluation_differs():
            again = self._read(self.tables["train"], "training", evaluation=True)
            for part in ("val", "test"):
                parts[part] = again[again.index.isin(parts[part].index)]
        for part in ("val", "test"):
            if self.tables[part] is not None:
                parts[part] = self._read(self.tables[part], part, evaluation=True)
        self._check_patients(parts)
        for part, df in parts.items():
            log.info(
                "%s %s: %d rows, %d patients", self.name, part, len(df), df["patient_id"].nunique()
            )
        self._labels = list(self.fit_labels(parts["train"]))
        log.info("%s label space (%d): %s", self.name, len(self._labels), self._labels)
        self._parts = parts
        return parts

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets from :meth:`prepare_tables` (once: they do not depend on the task,
        which normalises the images itself; :meth:`reset` forgets them)."""
        if self.train_set is not None:
            return
        parts = dict(self.prepare_tables())
        src = self.table_name(self.tables["train"])
        if self.train_fraction is not None or self.shots_per_class is not None:
            parts["train"] = self.subsample_train(
                parts["train"], self.strata(parts["train"]), f"{self.name} train"
            )
        self.train_set = self.build_dataset(
            parts["train"], True, f"{self.name} train split of {src}"
        )
        self.val_set = self.build_dataset(parts["val"], False, f"{self.name} val split of {src}")
        self.test_sets = {
            name: self.build_dataset(table, False, f"{name} test split of {src}", test=True)
            for name, table in self.test_parts(parts["test"]).items()
        }
        for name, table in self.shifted.items():
            shifted = self._read(table, f"shifted set {name!r}", evaluation=True)
            log.info(
                "shifted set %s: %d rows, %d patients",
                name,
                len(shifted),
                shifted["patient_id"].nunique(),
            )
            self.test_sets[name] = self.build_dataset(
                shifted, False, f"shifted set {name!r} ({self.table_name(table)})", test=True
            )

    def build_dataset(
        self, table: pd.DataFrame, train: bool, what: str, test: bool = False
    ) -> ImageTableDataset:
        """The dataset of one split: image checks, targets, groups, transform (a test set's
        wrapped in :class:`~medxfer.transforms.TenCropTransform` with ``ten_crop``)."""
        self._check_not_empty(table, what, self.split_description())
        table = self.checked(table, what, decode=self.verify_images)
        groups = {g: table[c].astype(str).tolist() for g, c in self.group_columns().items()}
        transform = self.transform(train)
        options = self.dataset_options(train)
        if test and self.ten_crop:
            if (
                options.get("views") is not None
                or self.dataset_class is not ImageTableDataset
                or not isinstance(transform, SeededTransform)
            ):
                raise ConfigError(
                    f"data option ten_crop=true: {type(self).__name__} does not hold single-image "
                    "classification cases (ten-crop averages one image's crop predictions)"
                )
            transform = TenCropTransform(transform)
        return self.dataset_class(
            table, self.targets(table, what), transform, groups, self.images, **options
        )

    def _read(self, table: Any, role: str, evaluation: bool = False) -> pd.DataFrame:
        """:meth:`read_table`, after checking the table's file exists (a missing table is one
        ``FileNotFoundError`` naming it and its role, not a reader's traceback)."""
        for name in self.table_paths(table):
            if not Path(name).exists():
                raise FileNotFoundError(f"{self.name}: {role} table not found: {name}")
        return self.read_table(table, evaluation=evaluation)

    @staticmethod
    def _check_not_empty(table: pd.DataFrame, what: str, after: str) -> None:
        if table.empty:
            raise ConfigError(f"{what}: the split is empty (after {after})")

    def _check_patients(self, parts: dict[str, pd.DataFrame]) -> None:
        """Explicit tables must not share a patient with another split (a leak)."""
        seen: dict[str, str] = {}
        for part in ("train", "val", "test"):
            for pid in parts[part]["patient_id"].astype(str).unique():
                if pid in seen and seen[pid] != part:
                    rows = parts[part][parts[part]["patient_id"].astype(str) == pid]
                    first = rows.iloc[0]
                    raise TableError(
                        f"patient {pid!r} is in both the {seen[pid]} and the {part} split "
                        f"(line {first['line']} of {first['source']}): explicit splits must not share patients"
                    )
                seen[pid] = part

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
        out = table[keep]
        self._check_not_empty(
            out,
            what,
            f"subsampling (train_fraction={self.train_fraction}, shots_per_class={self.shots_per_class})",
        )
        return out

    # Images -----------------------------------------------------------------------------------
    def cache_settings(self) -> CacheSettings:
        """The settings a cache of this datamodule's images must have been built with."""
        return CacheSettings(self.reader, self.cache_side)

    def cache_labels(self) -> LabelDecoder | None:
        """The decoder of the label maps (segmentation masks) a cache stores beside each image,
        from the image's table row (default: None, images only); :meth:`cache_settings` then
        declares their channels."""
        return None

    @property
    def images(self) -> ImageSource:
        """Where datasets read images: the cache when one is set (checked on first use), else
        the files."""
        if self._images is None:
            if self.cache:
                log.info("images from the cache %s (%s)", self.cache, self.cache_settings())
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

    def all_tables(self) -> pd.DataFrame:
        """Every table this datamodule reads (train, explicit val / test, shifted), with a
        ``table`` column naming each: what ``medxfer prepare`` caches."""
        named = {part: t for part, t in self.tables.items() if t is not None}
        named.update({f"shifted/{k}": t for k, t in self.shifted.items()})
        return pd.concat(
            [self._read(t, name).assign(table=name) for name, t in named.items()],
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
        rows, labels = image_rows(tables), self.cache_labels()
        if labels is not None:  # each image's table row goes to the label decoder
            records = tables.to_dict("records")
            rows = rows.assign(record=[records[r] for r in rows["row"]])
        return prepare_cache(
            path,
            rows,
            self.cache_settings(),
            bits=bits,
            table=tables.assign(paths=tables["paths"].map("|".join))
            if "paths" in tables
            else tables,
            tables=sorted({str(s) for s in tables["source"]}),
            skip_bad=self.skip_bad_images,
            workers=self.num_workers if workers is None else workers,
            batch_size=batch_size,
            progress=progress,
            labels=labels,
        )

    def checked(self, table: pd.DataFrame, what: str, decode: bool = False) -> pd.DataFrame:
        """The rows of ``table`` whose images are readable (:func:`check_images` with this
        datamodule's ``skip_bad_images`` and image source)."""
        return check_images(
            table, self.skip_bad_images, decode, what, self.images, max(1, self.num_workers)
        )

    # What the CLI links into the task -------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """Names of the K outputs, in target order (reads and splits the tables on first use
        when they come from the data)."""
        if self._labels is None:
            self.prepare_tables()
        assert self._labels is not None
        return self._labels

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
        """Names of the test dataloaders, in order (the in-distribution sets first)."""
        return [*self.test_names, *self.shifted]

    # Loaders ----------------------------------------------------------------------------------
    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Move a batch dict's tensors to ``device`` (Lightning's ``move_data_to_device``, the
        same ``non_blocking``) and pass its ids and group names through: Lightning's default
        visits every string of them, ~3 ms per batch of 32 on the CI machine (~1 % of a step)."""
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return batch_to_device(batch, device)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        """A loader with this datamodule's settings. Under DDP, evaluation loaders deal each
        case to exactly one rank (no padding with repeated cases), so metrics gathered across
        ranks equal the single-process ones."""
        trainer = self.trainer
        sampler: Sampler | None = None
        if train:
            return self._train_loader(dataset)
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.seed),  # not torch's global generator
            **self.loader_settings(),
        )

    def _train_loader(self, dataset: Dataset) -> ResumableLoader:
        """The training loader: :meth:`train_sampler`'s order (default: a permutation) drawn
        per epoch from ``(seed, seed_everything, epoch)``, split across DDP ranks, each sample
        augmented from its own key, and resumable mid-epoch from a checkpoint (see
        :mod:`medxfer.resume`)."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ResumableSampler(
            dataset,
            run_seed(self.seed),
            self.train_sampler(dataset),  # type: ignore[arg-type]
            num_replicas=world,
            rank=rank,
        )
        loader = ResumableLoader(
            KeyedDataset(dataset),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=False,
            generator=torch.Generator(),
            **self.loader_settings(),
        )
        if trainer is not None:
            loader.progress = partial(_epoch_progress, trainer)
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._resumable = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data: where the training loader is (epoch, batches
        trained on). The datamodule carries it because Lightning restores a datamodule before
        it first builds the loaders, whereas its own loader-state restore is skipped when the
        loaders were built early (a task that asks for ``estimated_stepping_batches``)."""
        if self._resumable is None:
            return {}
        return {"train_loader": self._resumable.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader where the checkpoint left it (see :meth:`state_dict`)."""
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._resumable is not None:
            self._resumable.load_state_dict(state)
        else:
            self._loader_state = state

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
