"""Natural-image targets of the scale study: CIFAR-10 / -100, Oxford Flowers-102 and
Oxford-IIIT Pets, fine-tuned as BiT does (random crop + flip), full- or few-shot.

The official training split is the template's training table, re-split into train / val by
``split`` (seeded and stratified by class: the validation data for model selection is carved
from the training split; every image is its own "patient"), and the official test split is the explicit test table,
evaluated whole. Targets are one-hot over every class of the dataset in its official order
(``CaseClassifier``: softmax, top-1 and the per-class metrics). ``shots_per_class: k`` keeps k
images of every class of the training split, drawn per ``subsample_seed`` and nested across k
(:mod:`medxfer.data.subsample`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd

from medxfer.transforms import ImageTransform, resize_side

from ..base import MedxferDataModule
from .readers import read_cifar, read_flowers, read_pets

__all__ = ["NATURAL_DATASETS", "NaturalImageDataModule"]

log = logging.getLogger(__name__)

#: The datasets this datamodule reads.
NATURAL_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "flowers102", "pets")


class NaturalImageDataModule(MedxferDataModule):
    """CIFAR-10 / -100, Flowers-102 or Pets from their real download.

    Args:
        root: the folder the dataset was extracted into (holding ``cifar-10-batches-py/`` /
            ``cifar-100-python/`` / ``cifar-10-batches-bin/`` / ``cifar-100-binary/``, or
            Flowers' ``jpg/`` and ``.mat`` files, or Pets' ``images/`` and ``annotations/``).
        dataset: ``cifar10``, ``cifar100``, ``flowers102`` or ``pets``.
        format: CIFAR only: ``python`` (pickles) or ``binary`` (``.bin`` records).
        cifar100_labels: CIFAR-100 only: ``fine`` (100 classes) or ``coarse`` (20).
        flowers_protocol: Flowers only: ``official`` (train on the published train + val ids,
            test on ``tstid``) or ``swapped`` (the scale study: train on ``tstid``, test on the
            rest).
        image_size: the crop side (BiT-HyperRule: 128 below 96² px, else 384).
        resize: the side before the crop (BiT-HyperRule: 160 / 448; default ``S * 8 / 7``).
        augment: random crop and horizontal flip in training.
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`), among them
            ``split`` (train / val fractions of the official training split; the test fraction
            must be 0: the official test split is the test set), ``shots_per_class`` and
            ``subsample_seed`` for few-shot transfer, ``cache`` (an HDF5 cache from
            ``medxfer prepare``, storing images at ``resize``).
    """

    default_name = "natural"
    default_batch_size = 128
    default_split = (0.9, 0.1, 0.0)

    def __init__(
        self,
        root: str,
        dataset: Literal["cifar10", "cifar100", "flowers102", "pets"] = "cifar10",
        format: Literal["python", "binary"] = "python",
        cifar100_labels: Literal["fine", "coarse"] = "fine",
        flowers_protocol: Literal["official", "swapped"] = "official",
        image_size: int = 128,
        resize: int | None = None,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        if dataset not in NATURAL_DATASETS:
            raise ValueError(
                f"dataset must be one of {', '.join(NATURAL_DATASETS)}, got {dataset!r}"
            )
        kwargs.setdefault("name", dataset)
        super().__init__(("train", root), test=("test", root), **kwargs)
        self.save_hyperparameters()
        self._classes: list[str] | None = None

    @property
    def reader(self) -> str:  # type: ignore[override]
        """CIFAR images are records of their batch files (the ``cifar`` reader); the others
        are colour files."""
        return "cifar" if self.hparams.dataset.startswith("cifar") else "rgb"

    @property
    def cache_side(self) -> int:
        return resize_side(self.hparams.image_size, self.hparams.resize)

    def table_name(self, table: tuple[str, str]) -> str:
        return table[1]

    def read_table(self, table: tuple[str, str], evaluation: bool = False) -> pd.DataFrame:
        """One official split, as ``(split, root)``."""
        split, root = table
        hp = self.hparams
        if hp.dataset.startswith("cifar"):
            df = read_cifar(root, hp.dataset, split, hp.format, hp.cifar100_labels)
        elif hp.dataset == "flowers102":
            df = read_flowers(root, split, hp.flowers_protocol)
        else:
            df = read_pets(root, "trainval" if split == "train" else "test")
        if self._classes is None:
            self._classes = list(df.attrs["classes"])
        return df

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        """Every class of the dataset, in its official order (a k-shot or fractional subset
        keeps the same label space)."""
        assert self._classes is not None, "read_table sets the classes"
        return self._classes

    def strata(self, train: pd.DataFrame) -> list[str]:
        """The class: subsets and k-shot draws are per class."""
        return train["class"].tolist()

    @property
    def default_stratify(self) -> bool:
        """The validation images are carved from the training split stratified by class."""
        return True

    def split_strata(self, table: pd.DataFrame) -> pd.DataFrame:
        """One indicator column per class."""
        return pd.get_dummies(table["class"]).astype(float)

    def targets(self, table: pd.DataFrame, what: str) -> np.ndarray:
        """One-hot over :attr:`label_names`."""
        index = {c: k for k, c in enumerate(self.label_names)}
        out = np.zeros((len(table), len(index)), dtype=np.float32)
        out[np.arange(len(table)), table["class"].map(index).to_numpy(dtype=np.int64)] = 1.0
        return out

    def group_columns(self) -> dict[str, str]:
        return {}

    def transform(self, train: bool) -> ImageTransform:
        hp = self.hparams
        return ImageTransform(hp.image_size, hp.resize, train=train and hp.augment, seed=self.seed)
