"""The one dataset of medxfer: one sample per validated table row, holding one image or a case
of several, in the batch contract of DESIGN.md (uint8 images, float16 where a modality keeps
more than 8 bits; the task normalises them on the device).

Every datamodule builds its splits from :class:`ImageTableDataset` (or a subclass adding, e.g.,
masks); :func:`age_group` bins the ages that readers turn into the ``age`` subgroup.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medxfer.data.cache import FileImages, ImageSource
from medxfer.transforms import DatasetTransform

__all__ = ["ImageTableDataset", "age_group", "age_groups"]


def age_group(age: float, edges: Sequence[float]) -> str:
    """The age bin of ``age`` for bin ``edges`` (e.g. ``(40, 60, 80)`` -> ``"<40"``,
    ``"40-59"``, ``"60-79"``, ``"80+"``); ``"unknown"`` for NaN.

    Raises:
        ValueError: a negative age (readers refuse ages outside [0, 120] with the file and
            line; this guards any other caller).
    """
    if age is None or np.isnan(age):
        return "unknown"
    if age < 0:
        raise ValueError(f"age {age:g} is negative: it has no age group")
    edges = sorted(edges)
    if not edges or age < edges[0]:
        return f"<{edges[0]:g}" if edges else "all"
    for lo, hi in itertools.pairwise(edges):
        if lo <= age < hi:
            return f"{lo:g}-{hi - 1:g}"
    return f"{edges[-1]:g}+"


def age_groups(ages: Sequence[float] | pd.Series, edges: Sequence[float]) -> list[str]:
    """:func:`age_group` of every age, computed once per distinct value: a table of 870k
    images has a few hundred distinct ages, and one call per row cost a third of building the
    merged chest X-ray table (``benchmarks/merged_tables.py``)."""
    values = pd.Series(ages, dtype=float)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    names = np.array([age_group(float(a), edges) for a in uniques], dtype=object)
    return names[codes].tolist()


class ImageTableDataset(Dataset):
    """The one dataset of medxfer: one sample per table row, holding one image or a case of
    several (DESIGN.md's batch contract).

    Single images (``views=None``; rows with ``path``): ``{"image" (C, S, S), "target",
    "groups", "id"}``, the image in the transform's dtype (uint8, or float16 for mammograms;
    the task normalises it on the device). Multi-image rows (``views=V``; rows with a ``paths``
    list and optionally a ``mask`` list, ``""`` where an image is absent): ``image``
    ``(V, C, S, S)`` with zeros in empty slots (zeros again once the task has normalised) and
    ``mask`` ``(V,)``. Two layouts of the slots:

    * fixed positions (``pack=False``; 4-view exams): slot ``k`` is always the same view, and in
      training ``swap`` (a slot permutation, e.g. left <-> right) is applied with ``swap_p``;
    * packed (``pack=True``; 1-6-photo cases): the real images fill the first slots, in training
      shuffled and then the first ``V`` kept (table order in evaluation).

    A single-image transform giving several crops of the image ``(N, C, S, S)``
    (:class:`~medxfer.transforms.TenCropTransform`, test-time ten-crop) makes ``image``
    ``(N, C, S, S)`` and adds ``"crops": True``: the task averages the crops' predictions.

    Random view choices draw from the transform's seeded generator, so they are reproducible and
    differ between DataLoader workers.

    Args:
        table: rows with ``id``, ``line``, ``source`` and ``path`` or ``paths`` (and ``mask``).
        targets: ``(N, K)`` float targets, one row per table row.
        transform: one decoded image -> tensor ``(C, S, S)``
            (:class:`~medxfer.transforms.DatasetTransform`: side, channels, dtype and the
            seeded generator the random view choices draw from).
        groups: batch group name -> one value per row.
        images: where images are read from (default: decoded from their files as grey).
        views: slots per sample (None: a single image per row).
        pack, shuffle, swap, swap_p: the multi-image layout and its training randomness, above.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        targets: np.ndarray | torch.Tensor,
        transform: DatasetTransform,
        groups: dict[str, Sequence[str]],
        images: ImageSource | None = None,
        views: int | None = None,
        pack: bool = False,
        shuffle: bool = False,
        swap: Sequence[int] | None = None,
        swap_p: float = 0.0,
    ) -> None:
        #: One path per row (single images) or one list of paths per row (cases).
        self.paths: list[Any] = (
            table["path"].tolist() if views is None else [list(p) for p in table["paths"]]
        )
        if views is not None and not pack:
            masks = (
                table["mask"].tolist()
                if "mask" in table
                else [[p != "" for p in r] for r in self.paths]
            )
            self.masks: torch.Tensor | None = torch.tensor(np.array(masks, dtype=bool))
        else:
            self.masks = None
        self.where = [
            f"line {line} of {src}"
            for line, src in zip(table["line"], table["source"], strict=True)
        ]
        self.ids = table["id"].astype(str).tolist()
        self.targets = torch.tensor(np.asarray(targets, dtype=np.float32))
        if len(self.targets) != len(self.ids):
            raise ValueError(f"{len(self.targets)} targets for {len(self.ids)} rows")
        self.groups = {g: [str(v) for v in values] for g, values in groups.items()}
        self.transform = transform
        self.images = images or FileImages("grey")
        self.views, self.pack, self.shuffle = views, pack, shuffle
        self.swap = torch.tensor(list(swap)) if swap is not None else None
        self.swap_p = swap_p

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int, path: str) -> torch.Tensor:
        context = self.where[i] if self.views is None else f"case {self.ids[i]}, {self.where[i]}"
        return self.transform(self.images(path, context=context))

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        if self.views is None:
            sample["image"] = self._read(i, self.paths[i])
            if sample["image"].ndim == 4:  # (N, C, S, S): test-time crops of one image
                sample["crops"] = True
        elif self.pack:
            paths = self.paths[i]
            if self.shuffle:
                self.transform.reseed()
                paths = [paths[k] for k in self.transform.rng.permutation(len(paths))]
            paths = paths[: self.views]
            image = self._empty()
            mask = torch.zeros(self.views, dtype=torch.bool)
            for k, p in enumerate(paths):
                image[k], mask[k] = self._read(i, p), True
            sample["image"], sample["mask"] = image, mask
        else:
            assert self.masks is not None
            image = self._empty()
            for k, p in enumerate(self.paths[i]):
                if self.masks[i, k]:
                    image[k] = self._read(i, p)
            mask = self.masks[i].clone()
            if (
                self.swap is not None
                and self.swap_p > 0
                and self.transform.rng.random() < self.swap_p
            ):
                image, mask = image[self.swap], mask[self.swap]
            sample["image"], sample["mask"] = image, mask
        sample["target"] = self.targets[i]
        sample["groups"] = {g: v[i] for g, v in self.groups.items()}
        sample["id"] = self.ids[i]
        return sample

    def _empty(self) -> torch.Tensor:
        """Zeros ``(V, C, S, S)`` in the transform's output dtype, for the slots of a case."""
        s, c = self.transform.image_size, self.transform.channels
        assert self.views is not None, "only multi-image cases have empty slots"
        return torch.zeros(self.views, c, s, s, dtype=self.transform.dtype)
