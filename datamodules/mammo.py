"""Mammography datamodule: 4-view screening exams from DICOM (or PNG), outcome labels at
several horizons, positives oversampled in training, and shifted sites.

Batches follow DESIGN.md's multi-image contract: ``image`` ``(B, 4, C, S, S)`` in the order
L-CC, R-CC, L-MLO, R-MLO with every breast facing the same side, ``mask`` ``(B, 4)`` (False for
a view the exam lacks, when allowed), ``target`` ``(B, K)`` horizon labels with NaN where
follow-up is too short. Groups: BI-RADS ``density`` and ``site``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from medxfer.data.cache import FileImages, ImageSource
from medxfer.data.dicom import read_mammogram
from medxfer.transforms import MammogramTransform

from .base import MedxferDataModule
from .mammo_tables import DEFAULT_HORIZONS, horizon_names, read_exam_list

__all__ = ["ExamDataset", "MammographyDataModule", "read_mammogram", "swap_laterality"]

log = logging.getLogger(__name__)

#: Slot permutation exchanging left and right: (L-CC, R-CC, L-MLO, R-MLO) -> (R-CC, L-CC, R-MLO, L-MLO).
SWAP = (1, 0, 3, 2)


def swap_laterality(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exchange the left and right views of an exam (``image`` ``(4, ...)``, ``mask`` ``(4,)``).
    Exam-level labels are unchanged by the swap."""
    order = torch.tensor(SWAP)
    return image[order], mask[order]


class ExamDataset(Dataset):
    """One sample per exam: the four views (zeros where missing) and their mask."""

    def __init__(
        self,
        exams: pd.DataFrame,
        labels: Sequence[str],
        transform: MammogramTransform,
        train: bool,
        swap_p: float = 0.5,
        images: ImageSource | None = None,
    ) -> None:
        self.paths: list[list[str]] = exams["paths"].tolist()
        self.masks = torch.tensor(np.array(exams["mask"].tolist(), dtype=bool))
        self.where = [
            f"line {line} of {src}"
            for line, src in zip(exams["line"], exams["source"], strict=True)
        ]
        self.ids = exams["id"].astype(str).tolist()
        self.targets = torch.tensor(exams[list(labels)].to_numpy(dtype=np.float32))
        self.groups = {
            "density": exams["density"].astype(str).tolist(),
            "site": exams["site"].astype(str).tolist(),
        }
        self.transform = transform
        self.train = train
        self.swap_p = swap_p
        self.images = images or FileImages("mammogram")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s, c = self.transform.image_size, self.transform.channels
        image = torch.zeros(4, c, s, s)
        for k, p in enumerate(self.paths[i]):
            if self.masks[i, k]:
                image[k] = self.transform(
                    self.images(p, context=f"exam {self.ids[i]}, {self.where[i]}")
                )
        mask = self.masks[i].clone()
        if self.train and self.swap_p > 0 and self.transform.rng.random() < self.swap_p:
            image, mask = swap_laterality(image, mask)
        return {
            "image": image,
            "mask": mask,
            "target": self.targets[i],
            "groups": {g: v[i] for g, v in self.groups.items()},
            "id": self.ids[i],
        }


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
        shifted: name -> exam list of each shifted site.
        name: the in-distribution set's name in logged keys.
        image_root: folder image paths are relative to (default: each CSV's folder).
        horizons: outcome horizons in months.
        allow_missing_views: zero images with a False mask for missing views (else an error).
        oversample: sample positive exams to about half of each training epoch (seeded).
        split, split_seed: the patient-level re-split.
        image_size: resolution (the paper: 2048).
        channels: output channels.
        augment: flips, x / y scaling, grid deformation and laterality swap in training.
        skip_bad_images: drop exams with a missing / undecodable image (counted, logged).
        seed: seed of augmentation and sampling.
        batch_size: training batch size (per process).
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): loader
            (``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor``), subsets (``train_fraction``, ``shots_per_class``,
            ``subsample_seed``) and ``cache``, an HDF5 image cache from ``medxfer prepare``
            (stores the oriented views at ``image_size``, 16-bit for DICOM).
    """

    reader = "mammogram"

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        shifted: dict[str, str] | None = None,
        name: str = "mammo",
        image_root: str | None = None,
        horizons: Sequence[int] = DEFAULT_HORIZONS,
        allow_missing_views: bool = False,
        oversample: bool = True,
        split: tuple[float, float, float] = (0.7, 0.1, 0.2),
        split_seed: int = 0,
        image_size: int = 2048,
        channels: int = 3,
        augment: bool = True,
        skip_bad_images: bool = False,
        seed: int = 0,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.save_hyperparameters()
        self.set_tables(train, val, test, shifted, name, split)
        self._channels = channels

    @property
    def label_names(self) -> list[str]:
        return horizon_names(self.hparams.horizons)

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return self.hparams.image_size

    def read_table(self, csv: str) -> pd.DataFrame:
        """Read one exam list with this datamodule's horizons and view settings."""
        hp = self.hparams
        return read_exam_list(csv, hp.image_root, hp.horizons, hp.allow_missing_views)

    def _dataset(self, exams: pd.DataFrame, train: bool, what: str) -> ExamDataset:
        hp = self.hparams
        if exams.empty:
            raise ValueError(f"{what}: the split is empty (after reading and the patient split)")
        exams = self.checked(exams, what)
        transform = MammogramTransform(
            hp.image_size, train=train and hp.augment, channels=self._channels, seed=hp.seed
        )
        return ExamDataset(
            exams, self.label_names, transform, train and hp.augment, images=self.images
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the exam lists, re-split by patient, and build the datasets."""
        if self.train_set is not None:
            return
        hp = self.hparams
        parts = self.split_tables(self.read_table, hp.split, hp.split_seed)
        src = self.tables["train"]
        positive = (parts["train"][self.label_names] == 1).any(axis=1)
        parts["train"] = self.subsample_train(
            parts["train"], np.where(positive, "positive", "negative"), f"{self.name} train"
        )
        self.train_set = self._dataset(parts["train"], True, f"{self.name} train split of {src}")
        self.val_set = self._dataset(parts["val"], False, f"{self.name} val split of {src}")
        self.test_sets = {
            self.name: self._dataset(parts["test"], False, f"{self.name} test split of {src}")
        }
        for name, csv in self.shifted.items():
            self.test_sets[name] = self._dataset(
                self.read_table(csv), False, f"shifted site {name!r} ({csv})"
            )

    def train_dataloader(self) -> DataLoader:
        if not self.hparams.oversample:
            return super().train_dataloader()
        assert isinstance(self.train_set, ExamDataset), "call setup('fit') first"
        weights = positive_weights(self.train_set.targets)
        g = torch.Generator().manual_seed(self.hparams.seed)
        sampler = WeightedRandomSampler(
            weights, num_samples=len(weights), replacement=True, generator=g
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            **self.loader_settings(),
        )
