"""Mammography datamodule: 4-view screening exams from DICOM (or PNG), outcome labels at
several horizons, positives oversampled in training, and shifted sites.

Batches follow DESIGN.md's multi-image contract: ``image`` ``(B, 4, C, S, S)`` in the order
L-CC, R-CC, L-MLO, R-MLO with every breast facing the same side, ``mask`` ``(B, 4)`` (False for
a view the exam lacks, when allowed), ``target`` ``(B, K)`` horizon labels with NaN where
follow-up is too short. Groups: BI-RADS ``density`` and ``site``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from medxfer.data.dataset import ImageTableDataset

from ..base import MedxferDataModule
from .tables import DEFAULT_HORIZONS, VIEW_ORDER, horizon_names, read_exam_list
from .transforms import MammogramTransform

__all__ = ["SWAP", "MammographyDataModule", "positive_weights", "swap_laterality"]

log = logging.getLogger(__name__)

#: Slot permutation exchanging left and right: (L-CC, R-CC, L-MLO, R-MLO) -> (R-CC, L-CC, R-MLO, L-MLO).
SWAP = (1, 0, 3, 2)


def swap_laterality(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exchange the left and right views of an exam (``image`` ``(4, ...)``, ``mask`` ``(4,)``).
    Exam-level labels are unchanged by the swap."""
    order = torch.tensor(SWAP)
    return image[order], mask[order]


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """Sampling weights giving positive exams (positive at any horizon) and the others equal
    total weight, so positives make up about half of what training sees."""
    positive = (targets == 1).any(dim=1)
    n_pos, n = int(positive.sum()), len(targets)
    if n_pos in (0, n):
        return torch.ones(n, dtype=torch.double)
    return torch.where(positive, 0.5 / n_pos, 0.5 / (n - n_pos)).double()


class MammographyDataModule(MedxferDataModule):
    """4-view screening mammography exams with multi-horizon outcome labels.

    Args:
        train: the training exam list; re-split by patient by ``split``.
        val, test: explicit exam lists (then their ``split`` fractions must be 0).
        image_root: folder image paths are relative to (default: each CSV's folder).
        horizons: outcome horizons in months.
        allow_missing_views: zero images with a False mask for missing views (else an error).
        oversample: sample positive exams to about half of each training epoch (seeded).
        split, split_seed: the patient-level re-split.
        image_size: resolution (the paper: 2048).
        channels: output channels.
        augment: flips, x / y scaling, grid deformation and laterality swap in training.
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): image
            checks (``skip_bad_images``: drop exams with a missing / undecodable image,
            counted and logged; ``verify_images``: decode every view at setup), table checks
            (``drop_duplicates``), loader (``eval_batch_size``, ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``prefetch_factor``), subsets (``train_fraction``,
            ``shots_per_class``, ``subsample_seed``) and ``cache``, an HDF5 image cache from
            ``medxfer prepare`` (stores the oriented views at ``image_size``, 16-bit for DICOM).
    """

    default_name = "mammo"
    default_batch_size = 8

    reader = "mammogram"

    def __init__(
        self,
        train: str,
        image_root: str | None = None,
        horizons: Sequence[int] = DEFAULT_HORIZONS,
        allow_missing_views: bool = False,
        oversample: bool = True,
        image_size: int = 2048,
        channels: int = 3,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(train, **kwargs)
        self.save_hyperparameters()
        self._channels = channels

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        return horizon_names(self.hparams.horizons)

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return self.hparams.image_size

    def read_table(self, table: str, evaluation: bool = False) -> pd.DataFrame:
        """Read one exam list with this datamodule's horizons and view settings."""
        hp = self.hparams
        return read_exam_list(
            table,
            hp.image_root,
            hp.horizons,
            hp.allow_missing_views,
            drop_duplicates=self.drop_duplicates,
        )

    def strata(self, train: pd.DataFrame) -> np.ndarray:
        """Positive (at any horizon) or negative."""
        positive = (train[self.label_names] == 1).any(axis=1)
        return np.where(positive, "positive", "negative")

    def group_columns(self) -> dict[str, str]:
        return {"density": "density", "site": "site"}

    def transform(self, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
        hp = self.hparams
        return MammogramTransform(
            hp.image_size,
            train=train and hp.augment,
            channels=self._channels,
            seed=self.seed,
        )

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Fixed view slots in :data:`~.tables.VIEW_ORDER`; the laterality swap in training."""
        swap = train and self.hparams.augment
        return {"views": len(VIEW_ORDER), "swap": SWAP, "swap_p": 0.5 if swap else 0.0}

    def train_sampler(self, dataset: ImageTableDataset) -> Sampler | None:
        """Positives oversampled to about half of each epoch (``oversample``), seeded."""
        if not self.hparams.oversample:
            return None
        weights = positive_weights(dataset.targets)
        g = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(
            weights, num_samples=len(weights), replacement=True, generator=g
        )
