"""Chest X-ray datamodule: train on one source (CheXpert or NIH ChestX-ray14), evaluate on its
in-distribution test split and on any number of shifted sets (other hospitals).

This reproduces the chest X-ray protocol of Mustafa et al. (2021): CheXpert's training set is
re-split by patient into train / validation / test, the model is selected on validation, and
the same model is evaluated zero-shot on NIH ChestX-ray14 in CheXpert's label space. Each test
set is its own dataloader, logged as ``test/<name>/<metric>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from medxfer.data.subsample import multilabel_strata
from medxfer.transforms import GreyImageTransform, resize_side

from .base import ImageTableDataset, MedxferDataModule, age_group
from .cxr_tables import COMPETITION_LABELS, read_chexpert_csv, read_nih_csv

__all__ = ["CXRTable", "ChestXrayDataModule"]

log = logging.getLogger(__name__)


@dataclass
class CXRTable:
    """Where one chest X-ray table is and in which format.

    Attributes:
        csv: CheXpert ``train.csv``/``valid.csv`` or NIH ``Data_Entry_2017*.csv``.
        format: ``chexpert`` or ``nih``.
        root: CheXpert: the folder holding ``CheXpert-v1.0.../`` (default: the CSV's
            grandparent). NIH: the image folder (default: ``images/`` beside the CSV).
        split_list: NIH only: keep the images listed (``test_list.txt``...).
    """

    csv: str
    format: Literal["chexpert", "nih"] = "chexpert"
    root: str | None = None
    split_list: str | None = None


class ChestXrayDataModule(MedxferDataModule):
    """Multi-label chest X-ray data with in-distribution and shifted test sets.

    Args:
        train: the training table; re-split by patient into train / val / test by ``split``.
        val: an explicit validation table (then ``split[1]`` must be 0).
        test: an explicit in-distribution test table (then ``split[2]`` must be 0).
        shifted: name -> table of each shifted test set (e.g. ``{"nih": ...}``).
        name: the in-distribution set's name in logged keys.
        labels: label names (CheXpert observations or, for NIH, its findings).
        uncertainty: CheXpert -1.0 in training: ``ones`` (U-Ones), ``zeros``, ``ignore``.
        eval_uncertainty: the same for validation / test tables (default: masked).
        frontal_only: drop lateral images.
        split: (train, val, test) fractions of the patient-level re-split.
        split_seed: seed of the re-split.
        image_size: training and evaluation resolution.
        resize: side before cropping (default ``image_size * 8 / 7``).
        channels: output channels (3 for RGB backbones, 1 with an adapted first conv).
        augment: the paper's augmentation in training.
        age_bins: edges of the age groups.
        skip_bad_images: drop (count and log) missing or undecodable images instead of failing.
        verify_images: decode every image at setup (default: only check the files exist).
        seed: seed of the augmentation.
        batch_size: training batch size (per process).
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): loader
            (``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor``), subsets (``train_fraction``, ``shots_per_class``,
            ``subsample_seed``) and ``cache``, an HDF5 image cache from ``medxfer prepare``
            (stores images at ``resize``).
    """

    def __init__(
        self,
        train: CXRTable,
        val: CXRTable | None = None,
        test: CXRTable | None = None,
        shifted: dict[str, CXRTable] | None = None,
        name: str = "chexpert",
        labels: Sequence[str] = COMPETITION_LABELS,
        uncertainty: Literal["ones", "zeros", "ignore"] = "ones",
        eval_uncertainty: Literal["ones", "zeros", "ignore"] = "ignore",
        frontal_only: bool = True,
        split: tuple[float, float, float] = (0.75, 0.10, 0.15),
        split_seed: int = 0,
        image_size: int = 224,
        resize: int | None = None,
        channels: int = 3,
        augment: bool = True,
        age_bins: Sequence[float] = (40, 60, 80),
        skip_bad_images: bool = False,
        verify_images: bool = False,
        seed: int = 0,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.save_hyperparameters()
        self.set_tables(train, val, test, shifted, name, split)
        self.labels = list(labels)
        self._channels = channels

    @property
    def label_names(self) -> list[str]:
        return self.labels

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return resize_side(self.hparams.image_size, self.hparams.resize)

    def read_table(self, table: CXRTable, uncertainty: str | None = None) -> pd.DataFrame:
        """Read one table with this datamodule's label settings (``uncertainty``: the training
        policy by default) and add the group columns."""
        hp = self.hparams
        uncertainty = uncertainty or hp.uncertainty
        if table.format == "chexpert":
            df = read_chexpert_csv(table.csv, self.labels, uncertainty, hp.frontal_only, table.root)  # type: ignore[arg-type]
        elif table.format == "nih":
            df = read_nih_csv(table.csv, self.labels, table.root, table.split_list)
        else:
            raise ValueError(
                f"{table.csv}: unknown format {table.format!r}; use 'chexpert' or 'nih'"
            )
        df["age_group"] = [age_group(a, hp.age_bins) for a in df["age"]]
        return df

    def _dataset(self, df: pd.DataFrame, train: bool, what: str) -> ImageTableDataset:
        hp = self.hparams
        if df.empty:
            raise ValueError(
                f"{what}: the split is empty (after reading, filtering and the patient split)"
            )
        df = self.checked(df, what, decode=hp.verify_images)
        transform = GreyImageTransform(
            hp.image_size,
            hp.resize,
            train=train and hp.augment,
            channels=self._channels,
            seed=hp.seed,
        )
        groups = {"sex": "sex", "age": "age_group", "view": "view"}
        return ImageTableDataset(df, self.labels, transform, groups, self.images)

    def setup(self, stage: str | None = None) -> None:
        """Read the tables, re-split by patient, and build the datasets."""
        if self.train_set is not None or self.test_sets:
            return
        hp = self.hparams
        parts = self.split_tables(
            lambda t: self.read_table(t, hp.uncertainty),
            hp.split,
            hp.split_seed,
            read_eval=lambda t: self.read_table(t, hp.eval_uncertainty),
        )
        if hp.eval_uncertainty != hp.uncertainty:  # re-split val / test get the evaluation policy
            again = self.read_table(self.tables["train"], hp.eval_uncertainty)
            for part in ("val", "test"):
                if self.tables[part] is None:
                    parts[part] = again[again.index.isin(parts[part].index)]
        for part, df in parts.items():
            log.info(
                "%s %s: %d images, %d patients",
                self.name,
                part,
                len(df),
                df["patient_id"].nunique(),
            )
        src = self.tables["train"].csv
        strata = multilabel_strata(parts["train"][self.labels].to_numpy(dtype=float), self.labels)
        parts["train"] = self.subsample_train(parts["train"], strata, f"{self.name} train")
        self.train_set = self._dataset(parts["train"], True, f"{self.name} train split of {src}")
        self.val_set = self._dataset(parts["val"], False, f"{self.name} val split of {src}")
        self.test_sets = {
            self.name: self._dataset(parts["test"], False, f"{self.name} test split of {src}")
        }
        for name, table in self.shifted.items():
            self.test_sets[name] = self._dataset(
                self.read_table(table, hp.eval_uncertainty),
                False,
                f"shifted set {name!r} ({table.csv})",
            )
