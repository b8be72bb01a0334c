"""Dermatology datamodule: cases of 1-6 photographs, soft differential targets, skin-type
subgroups, and shifted datasets with another condition prevalence (Mustafa et al. 2021's
dermatology dataset B is cancer-heavy).

Batches follow DESIGN.md's multi-image contract: ``image`` ``(B, V, 3, S, S)`` with ``V =
max_images`` slots, ``mask`` ``(B, V)`` marking the real images (padding slots are zeros and
never reach the model), ``target`` ``(B, K)`` soft labels over the training label space.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medxfer.data.cache import FileImages, ImageSource
from medxfer.transforms import ColorImageTransform

from .base import MedxferDataModule
from .derm_tables import build_label_space, read_derm_cases, soft_targets

__all__ = ["CaseDataset", "DermatologyDataModule"]

log = logging.getLogger(__name__)


class CaseDataset(Dataset):
    """One sample per case: its images padded to ``max_images`` slots with a mask.

    In training (``sample=True``) the case's images are shuffled and up to ``max_images`` of
    them are used; in evaluation the first ``max_images`` in table order.
    """

    def __init__(
        self,
        cases: pd.DataFrame,
        targets: np.ndarray,
        transform: ColorImageTransform,
        max_images: int,
        sample: bool,
        group_columns: dict[str, str],
        seed: int = 0,
        images: ImageSource | None = None,
    ) -> None:
        self.paths: list[list[str]] = cases["paths"].tolist()
        self.where = [
            f"line {line} of {src}"
            for line, src in zip(cases["line"], cases["source"], strict=True)
        ]
        self.ids = cases["id"].astype(str).tolist()
        self.targets = torch.from_numpy(targets)
        self.groups = {g: cases[c].astype(str).tolist() for g, c in group_columns.items()}
        self.transform = transform
        self.max_images = max_images
        self.sample = sample
        self.seed = seed
        self.images = images or FileImages("rgb")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        paths = self.paths[i]
        if self.sample:
            self.transform._reseed()
            paths = [paths[k] for k in self.transform.rng.permutation(len(paths))]
        paths = paths[: self.max_images]
        size = self.transform.image_size
        image = torch.zeros(self.max_images, 3, size, size)
        mask = torch.zeros(self.max_images, dtype=torch.bool)
        for k, p in enumerate(paths):
            image[k] = self.transform(
                self.images(p, context=f"case {self.ids[i]}, {self.where[i]}")
            )
            mask[k] = True
        return {
            "image": image,
            "mask": mask,
            "target": self.targets[i],
            "groups": {g: v[i] for g, v in self.groups.items()},
            "id": self.ids[i],
        }


class DermatologyDataModule(MedxferDataModule):
    """Dermatology cases of 1-6 photos with soft differential labels and skin-type subgroups.

    Args:
        train: the training case table (either layout); re-split by patient by ``split``.
        val: an explicit validation table (then ``split[1]`` must be 0).
        test: an explicit in-distribution test table (then ``split[2]`` must be 0).
        shifted: name -> case table of each shifted test set.
        name: the in-distribution set's name in logged keys.
        image_root: folder image paths are relative to (default: each CSV's folder).
        n_conditions: size of the label space before "Other" (from the training split only).
        max_images: image slots per case.
        truncate_images: keep the first ``max_images`` of larger cases (counted) instead of failing.
        split: (train, val, test) fractions of the patient-level re-split.
        split_seed: seed of the re-split.
        image_size: resolution (the paper: 448).
        augment: the paper's augmentation in training.
        skip_bad_images: drop cases with a missing / undecodable image (counted, logged).
        seed: seed of augmentation and image sampling.
        batch_size: training batch size (per process).
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): loader
            (``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``prefetch_factor``), subsets (``train_fraction``, ``shots_per_class``,
            ``subsample_seed``) and ``cache``, an HDF5 image cache from ``medxfer prepare``
            (stores photos at ``image_size``).
    """

    reader = "rgb"

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        shifted: dict[str, str] | None = None,
        name: str = "derm",
        image_root: str | None = None,
        n_conditions: int = 26,
        max_images: int = 6,
        truncate_images: bool = False,
        split: tuple[float, float, float] = (0.7, 0.1, 0.2),
        split_seed: int = 0,
        image_size: int = 448,
        augment: bool = True,
        skip_bad_images: bool = False,
        seed: int = 0,
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.save_hyperparameters()
        self.set_tables(train, val, test, shifted, name, split)
        self.labels: list[str] | None = None

    @property
    def cache_side(self) -> int:
        return self.hparams.image_size

    def read_table(self, csv: str) -> pd.DataFrame:
        """Read one case table (either layout) with this datamodule's image settings."""
        hp = self.hparams
        return read_derm_cases(csv, hp.image_root, hp.max_images, hp.truncate_images)

    def _space(self) -> list[str]:
        if self.labels is None:
            self.setup("fit")
        assert self.labels is not None
        return self.labels

    @property
    def label_names(self) -> list[str]:
        """The training split's ``n_conditions`` most common conditions, then "Other" (reads the
        training table on first use)."""
        return self._space()

    def _dataset(self, cases: pd.DataFrame, train: bool, what: str) -> CaseDataset:
        hp = self.hparams
        if cases.empty:
            raise ValueError(f"{what}: the split is empty (after reading and the patient split)")
        cases = self.checked(cases, what)
        transform = ColorImageTransform(hp.image_size, train=train and hp.augment, seed=hp.seed)
        groups = {"skin_type": "fitzpatrick", "sex": "sex", "age": "age_group"}
        return CaseDataset(
            cases,
            soft_targets(cases, self._space(), what),
            transform,
            hp.max_images,
            train,
            groups,
            hp.seed,
            self.images,
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the tables, re-split by patient, build the label space from train, and the datasets."""
        if self.train_set is not None:
            return
        hp = self.hparams
        parts = self.split_tables(self.read_table, hp.split, hp.split_seed)
        self.labels = build_label_space(parts["train"], hp.n_conditions)
        log.info("%s label space (%d): %s", self.name, len(self.labels), self.labels)
        src = self.tables["train"]
        # the label space comes from the whole training split, so subsets share it
        parts["train"] = self.subsample_train(
            parts["train"], parts["train"]["top_label"].tolist(), f"{self.name} train"
        )
        self.train_set = self._dataset(parts["train"], True, f"{self.name} train split of {src}")
        self.val_set = self._dataset(parts["val"], False, f"{self.name} val split of {src}")
        self.test_sets = {
            self.name: self._dataset(parts["test"], False, f"{self.name} test split of {src}")
        }
        for name, csv in self.shifted.items():
            self.test_sets[name] = self._dataset(
                self.read_table(csv), False, f"shifted set {name!r} ({csv})"
            )
