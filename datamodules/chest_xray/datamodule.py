"""Chest X-ray datamodule: train on one source (CheXpert, NIH ChestX-ray14 or MIMIC-CXR-JPG),
evaluate on its in-distribution test split and on any number of shifted sets (other hospitals).

This reproduces the chest X-ray protocol of Mustafa et al. (2021): CheXpert's training set is
re-split by patient into train / validation / test, the model is selected on validation, and
the same model is evaluated zero-shot on NIH ChestX-ray14 in CheXpert's label space. Each test
set is its own dataloader, logged as ``test/<name>/<metric>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from medxfer.data.dataset import age_group
from medxfer.transforms import resize_side

from ..base import MedxferDataModule
from .covidx import read_covidx
from .mimic import read_mimic_cxr
from .tables import COMPETITION_LABELS, read_chexpert_csv, read_nih_csv
from .transforms import GreyImageTransform
from .tuberculosis import read_tuberculosis

__all__ = ["CXRTable", "ChestXrayDataModule"]

log = logging.getLogger(__name__)


@dataclass
class CXRTable:
    """Where one chest X-ray table is and in which format.

    Attributes:
        csv: CheXpert ``train.csv``/``valid.csv``, NIH ``Data_Entry_2017*.csv``, MIMIC-CXR-JPG
            ``mimic-cxr-2.0.0-metadata.csv.gz`` (its label and split tables beside it), a COVIDx
            label file (``train.txt``, ``test_COVIDx9A.txt``...) or a tuberculosis set's folder
            (``MontgomerySet/``, ``ChinaSet_AllFiles/``).
        format: ``chexpert``, ``nih``, ``mimic``, ``covidx`` or ``tuberculosis``.
        root: CheXpert: the folder holding ``CheXpert-v1.0.../`` (default: the CSV's
            grandparent). NIH: the image folder (default: ``images/`` beside the CSV).
            MIMIC: the folder holding ``files/`` (default: the table's folder). COVIDx: the
            split's image folder (default: ``train/``, ``val/`` or ``test/`` beside the file).
        split_list: NIH only: keep the images listed (``test_list.txt``...).
        official_split: MIMIC only: keep the images of this official split (``train``,
            ``validate``, ``test``).
        labeler: MIMIC only: the label table, ``chexpert`` or ``negbio``.
        patients: MIMIC only: MIMIC-IV's ``patients.csv[.gz]`` for sex and age.
        fields: COVIDx only: the label file's shape, ``3``, ``4``, ``mixed`` or ``auto``
            (detected per line and logged).
    """

    csv: str
    format: Literal["chexpert", "nih", "mimic", "covidx", "tuberculosis"] = "chexpert"
    root: str | None = None
    split_list: str | None = None
    official_split: Literal["train", "validate", "test"] | None = None
    labeler: Literal["chexpert", "negbio"] = "chexpert"
    patients: str | None = None
    fields: Literal["auto", "3", "4", "mixed"] = "auto"


class ChestXrayDataModule(MedxferDataModule):
    """Multi-label chest X-ray data with in-distribution and shifted test sets.

    Args:
        train: the training table; re-split by patient into train / val / test by ``split``.
        val: an explicit validation table (then ``split[1]`` must be 0).
        test: an explicit in-distribution test table (then ``split[2]`` must be 0).
        shifted: name -> table of each shifted test set (e.g. ``{"nih": ...}``).
        labels: label names (CheXpert observations or, for NIH, its findings).
        uncertainty: CheXpert -1.0 in training: ``ones`` (U-Ones), ``zeros``, ``ignore``, or
            the label smoothing ``lsr-ones`` (U(0.55, 0.85)) / ``lsr-zeros`` (U(0, 0.3)), drawn
            per image (MIMIC: per study) and label from ``seed``, the same on every read and
            resume.
        eval_uncertainty: the same for validation / test tables (default: masked).
        frontal_only: drop lateral images.
        image_size: training and evaluation resolution.
        resize: side before cropping (default ``image_size * 8 / 7``).
        channels: output channels (3 for RGB backbones, 1 with an adapted first conv).
        augment: the paper's augmentation in training.
        age_bins: edges of the age groups.
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): image
            checks (``skip_bad_images``, ``verify_images``), table checks
            (``drop_duplicates``, ``unknown_sex``), loader (``eval_batch_size``,
            ``num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``),
            subsets (``train_fraction``, ``shots_per_class``, ``subsample_seed``) and
            ``cache``, an HDF5 image cache from ``medxfer prepare`` (stores images at
            ``resize``).
    """

    default_name = "chexpert"
    default_batch_size = 32
    default_split = (0.75, 0.10, 0.15)

    def __init__(
        self,
        train: CXRTable,
        val: CXRTable | None = None,
        test: CXRTable | None = None,
        shifted: dict[str, CXRTable] | None = None,
        labels: Sequence[str] = COMPETITION_LABELS,
        uncertainty: Literal["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"] = "ones",
        eval_uncertainty: Literal["ones", "zeros", "ignore"] = "ignore",
        frontal_only: bool = True,
        image_size: int = 224,
        resize: int | None = None,
        channels: int = 3,
        augment: bool = True,
        age_bins: Sequence[float] = (40, 60, 80),
        **kwargs: Any,
    ) -> None:
        super().__init__(train, val, test, shifted, **kwargs)
        self.save_hyperparameters()
        self.labels = list(labels)
        self._channels = channels

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return resize_side(self.hparams.image_size, self.hparams.resize)

    def table_name(self, table: CXRTable) -> str:
        return table.csv

    def evaluation_differs(self) -> bool:
        return self.hparams.eval_uncertainty != self.hparams.uncertainty

    def read_table(self, table: CXRTable, evaluation: bool = False) -> pd.DataFrame:
        """Read one table with this datamodule's label settings (the evaluation uncertainty
        policy when ``evaluation``) and add the age groups."""
        hp = self.hparams
        uncertainty = hp.eval_uncertainty if evaluation else hp.uncertainty
        if table.format == "chexpert":
            df = read_chexpert_csv(
                table.csv,
                self.labels,
                uncertainty,  # type: ignore[arg-type]
                hp.frontal_only,
                table.root,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
                lsr_seed=self.seed,
            )
        elif table.format == "mimic":
            df = read_mimic_cxr(
                table.csv,
                self.labels,
                uncertainty,  # type: ignore[arg-type]
                hp.frontal_only,
                table.official_split,
                table.labeler,
                table.root,
                table.patients,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
                lsr_seed=self.seed,
            )
        elif table.format == "covidx":
            df = read_covidx(
                table.csv,
                self.labels,
                table.root,
                table.fields,
                drop_duplicates=self.drop_duplicates,
            )
        elif table.format == "tuberculosis":
            df = read_tuberculosis(table.csv, self.labels)
        elif table.format == "nih":
            df = read_nih_csv(
                table.csv,
                self.labels,
                table.root,
                table.split_list,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
            )
        else:
            raise ValueError(
                f"{table.csv}: unknown format {table.format!r}; use 'chexpert', 'nih', 'mimic', "
                "'covidx' or 'tuberculosis'"
            )
        df["age_group"] = [age_group(a, hp.age_bins) for a in df["age"]]
        return df

    def group_columns(self) -> dict[str, str]:
        return {"sex": "sex", "age": "age_group", "view": "view"}

    def transform(self, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
        hp = self.hparams
        return GreyImageTransform(
            hp.image_size,
            hp.resize,
            train=train and hp.augment,
            channels=self._channels,
            seed=self.seed,
        )
