"""Dermatology datamodule: cases of 1-6 photographs, soft differential targets, skin-type
subgroups, and shifted datasets with another condition prevalence (Mustafa et al. 2021's
dermatology dataset B is cancer-heavy).

Batches follow DESIGN.md's multi-image contract: ``image`` ``(B, V, 3, S, S)`` with ``V =
max_images`` slots, ``mask`` ``(B, V)`` marking the real images (padding slots are zeros and
never reach the model), ``target`` ``(B, K)`` soft labels over the training label space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..base import MedxferDataModule
from .tables import build_label_space, read_derm_cases, soft_targets
from .transforms import ColorImageTransform

__all__ = ["DermatologyDataModule"]

log = logging.getLogger(__name__)


class DermatologyDataModule(MedxferDataModule):
    """Dermatology cases of 1-6 photos with soft differential labels and skin-type subgroups.

    Args:
        train: the training case table (either layout); re-split by patient by ``split``.
        image_root: folder image paths are relative to (default: each CSV's folder).
        n_conditions: size of the label space before "Other" (from the training split only).
        conditions: the known condition names (e.g. a dataset's ontology); a differential
            naming another is an error suggesting the closest known name. Default: any name
            (a rare name close to a common one is warned about).
        max_images: image slots per case.
        truncate_images: keep the first ``max_images`` of larger cases (counted) instead of failing.
        image_size: resolution (the paper: 448).
        augment: the paper's augmentation in training.
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): image
            checks (``skip_bad_images``: drop cases with a missing / undecodable image, counted
            and logged; ``verify_images``: decode every photo at setup), table checks
            (``drop_duplicates``, ``unknown_sex``), loader (``eval_batch_size``, ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``prefetch_factor``), subsets (``train_fraction``,
            ``shots_per_class``, ``subsample_seed``) and ``cache``, an HDF5 image cache from
            ``medxfer prepare`` (stores photos at ``image_size``).
    """

    default_name = "derm"
    default_batch_size = 16

    reader = "rgb"

    def __init__(
        self,
        train: str,
        image_root: str | None = None,
        n_conditions: int = 26,
        conditions: list[str] | None = None,
        max_images: int = 6,
        truncate_images: bool = False,
        image_size: int = 448,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(train, **kwargs)
        self.save_hyperparameters()

    @property
    def cache_side(self) -> int:
        return self.hparams.image_size

    def read_table(self, table: str, evaluation: bool = False) -> pd.DataFrame:
        """Read one case table (either layout) with this datamodule's image settings."""
        hp = self.hparams
        return read_derm_cases(
            table,
            hp.image_root,
            hp.max_images,
            hp.truncate_images,
            conditions=hp.conditions,
            drop_duplicates=self.drop_duplicates,
            unknown_sex=self.unknown_sex,
        )

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        """The training split's ``n_conditions`` most common conditions, then "Other"."""
        return build_label_space(train, self.hparams.n_conditions)

    def strata(self, train: pd.DataFrame) -> list[str]:
        """The case's top condition."""
        return train["top_label"].tolist()

    def targets(self, table: pd.DataFrame, what: str) -> np.ndarray:
        """Soft targets over the label space (the dermatologists' weighted differential)."""
        return soft_targets(table, self.label_names, what)

    def group_columns(self) -> dict[str, str]:
        return {"skin_type": "fitzpatrick", "sex": "sex", "age": "age_group"}

    def transform(self, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
        hp = self.hparams
        return ColorImageTransform(hp.image_size, train=train and hp.augment, seed=self.seed)

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Packed slots of ``max_images``; in training the case's photos are shuffled first."""
        return {"views": self.hparams.max_images, "pack": True, "shuffle": train}
