"""Segmentation datamodule on the data template: images with masks (and a field of view) from the
benchmark layouts -- DRIVE, Montgomery, SIIM-ACR -- or a generic image + mask table, through the
same patient split, subsets, image checks and shifted test sets as every medxfer datamodule.

Batches: ``image`` ``(B, C, S, S)``, ``target`` ``(B, K, S, S)`` 0/1 masks (``(B, S, S)`` class
indices with ``multiclass``), ``valid`` ``(B, S, S)`` (the field of view; all true without one),
``size`` ``(B, 2)`` (each image's native ``(H, W)``), ``groups``, ``id``. With
``native_resolution`` the evaluation batches (validation, test, predict) also carry each image's
masks and field of view at its native size, as lists of B tensors (sizes differ between images):
``native_target`` uint8 ``(K, H, W)`` (int64 ``(H, W)`` class indices with ``multiclass``) and
``native_valid`` bool ``(H, W)`` (``None`` for an image without a field of view); the
``Segmenter`` then scores there (:data:`NATIVE_KEYS`, :func:`collate_masks`).

Mask and field-of-view files hold two declared values, background and foreground
(``mask_values``, 0 / 255 in DRIVE, Montgomery and the synthetic copies); any other value is an
error naming the file and the values, never thresholded away. With an HDF5 cache (``medxfer
prepare``) the masks and the field of view are stored beside the image, resized
nearest-neighbour, and read from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import default_collate

from medxfer.data.cache import CacheSettings, ImageCache, LabelDecoder
from medxfer.data.dataset import ImageTableDataset, age_groups
from medxfer.data.images import ImageDecodeError, read_label_image, where
from medxfer.data.rle import rle_decode
from medxfer.data.tables import normalise_sex

from ..base import MedxferDataModule
from .readers import read_drive, read_mask_table, read_montgomery, read_siim
from .transforms import SegmentationTransform

__all__ = [
    "NATIVE_KEYS",
    "MaskDataset",
    "SegmentationDataModule",
    "collate_masks",
    "load_masks",
    "read_mask",
]

#: The batch keys of the native-resolution masks, lists of B tensors of each image's own size.
NATIVE_KEYS = ("native_target", "native_valid")

log = logging.getLogger(__name__)

Layout = Literal["table", "drive", "montgomery", "siim"]


def read_mask(path: str, values: Sequence[int] = (0, 255), context: str = "") -> np.ndarray:
    """A binary mask file (PNG, GIF, TIFF) as bool ``(H, W)``: its stored values (never scaled,
    :func:`~medxfer.data.images.read_label_image`) must be the declared ``values``
    (background, foreground).

    Raises:
        ImageDecodeError: a missing or undecodable file, or values outside ``values``, naming
            the file, its row and the offending values.
    """
    raw = read_label_image(path, context)
    background, foreground = (int(v) for v in values)
    if raw.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    else:
        present = np.unique(raw)
    bad = sorted(set(present.tolist()) - {background, foreground})
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (
            f" ... ({len(bad)} values)" if len(bad) > 10 else ""
        )
        raise ImageDecodeError(
            f"mask {where(path, context)} holds value(s) {shown} outside the declared classes "
            f"(background {background}, foreground {foreground}); fix the file, or set "
            "mask_values to the values your masks use"
        )
    return raw == foreground


def load_masks(
    row: dict[str, Any],
    shape: tuple[int, int],
    context: str,
    values: Sequence[int] = (0, 255),
) -> np.ndarray:
    """The masks and field of view of one table row as uint8 0/1 ``(H, W, K + 1)`` for an image
    of ``shape`` (H, W): each of the K mask channels the union of its files (or of its
    run-length strings), then the field of view (all ones without one). Mask files hold the
    declared ``values`` (:func:`read_mask`). A mask of another size than its image is an error
    naming both files (the image is the row's ``path``) and both sizes. This is also what an
    HDF5 cache stores per image (resized nearest-neighbour).
    """
    image = f" {row['path']}" if row.get("path") else ""
    if "rle" in row and isinstance(row["rle"], list):
        mask = np.zeros(shape, dtype=bool)
        for text in row["rle"]:
            mask |= rle_decode(text, shape, row.get("encoding", "relative"))
        channels = [mask]
    else:
        channels = []
        for files in row["masks"]:
            union = np.zeros(shape, dtype=bool)
            for f in files:
                m = read_mask(f, values, context)
                if m.shape != shape:
                    raise ImageDecodeError(
                        f"mask {where(f, context)} is {m.shape[1]}x{m.shape[0]} but its "
                        f"image{image} is {shape[1]}x{shape[0]}"
                    )
                union |= m
            channels.append(union)
    fov = row.get("valid")
    if isinstance(fov, str) and fov:
        valid = read_mask(fov, values, context)
        if valid.shape != shape:
            raise ImageDecodeError(
                f"field of view {where(fov, context)} is {valid.shape[1]}x{valid.shape[0]} but "
                f"its image{image} is {shape[1]}x{shape[0]}"
            )
    else:
        valid = np.ones(shape, dtype=bool)
    return np.stack([*channels, valid], axis=-1).astype(np.uint8)


def collate_masks(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """PyTorch's ``default_collate``, except for the native-resolution masks
    (:data:`NATIVE_KEYS`), kept as lists of B tensors: their sizes differ between images."""
    if NATIVE_KEYS[0] not in samples[0]:
        return default_collate(samples)
    native = {k: [s[k] for s in samples] for k in NATIVE_KEYS}
    batch = default_collate([{k: v for k, v in s.items() if k not in NATIVE_KEYS} for s in samples])
    return {**batch, **native}


def _image_shape(path: str, images: Any, context: str) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (PIL), decoding it through ``images`` only
    for a container PIL cannot read (DICOM)."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError):
        return tuple(images(path, context).shape[:2])  # type: ignore[return-value]


class MaskDataset(ImageTableDataset):
    """:class:`ImageTableDataset` for images with masks: each sample adds ``valid`` and ``size``
    (the image's native ``(H, W)``), and its ``target`` is the transformed mask instead of a
    label vector.

    Masks come from the image source when it is a cache holding them (``medxfer prepare``),
    else from their files (:func:`load_masks`). With ``native`` each sample also holds the
    masks and field of view at the image's native size (:data:`NATIVE_KEYS`), read from the
    files (or run-length strings) even with a cache, which stores them resized.

    Args (beyond :class:`ImageTableDataset`):
        table: rows with ``path``, ``masks`` (or ``rle``, ``shape``, ``encoding``) and
            ``valid``.
        multiclass: targets as class indices ``(S, S)`` (the arg-max channel) instead of 0/1.
        mask_values: the background and foreground values of mask files (:func:`read_mask`).
        native: add the native-resolution masks (evaluation sets with ``native_resolution``).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *args: Any,
        multiclass: bool = False,
        mask_values: Sequence[int] = (0, 255),
        native: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(table, *args, **kw)
        columns = [c for c in ("path", "masks", "rle", "shape", "encoding", "valid") if c in table]
        self.rows = table[columns].to_dict("records")
        self.multiclass = multiclass
        self.mask_values = tuple(mask_values)
        self.native = native

    def __getitem__(self, i: int) -> dict[str, Any]:
        context = self.where[i]
        image = self.images(self.paths[i], context=context)
        native: np.ndarray | None = None
        if isinstance(self.images, ImageCache):
            stack = self.images.labels(self.paths[i], context=context)
            size = self.images.source_shape(self.paths[i])
            if self.native:
                native = load_masks(self.rows[i], size, context, self.mask_values)
        else:
            size = image.shape[:2]
            stack = native = load_masks(self.rows[i], size, context, self.mask_values)
        masks, valid = np.ascontiguousarray(stack[..., :-1]), np.ascontiguousarray(stack[..., -1])
        x, target, fov = self.transform(image, masks, valid)  # type: ignore[call-arg]
        if self.multiclass:
            target = target.argmax(0)
        sample = {
            "image": x,
            "target": target,
            "valid": fov,
            "size": torch.tensor(size, dtype=torch.int64),
            "groups": {g: v[i] for g, v in self.groups.items()},
            "id": self.ids[i],
        }
        if self.native:
            assert native is not None
            truth = torch.from_numpy(np.ascontiguousarray(native[..., :-1].transpose(2, 0, 1)))
            has_fov = isinstance(self.rows[i].get("valid"), str) and bool(self.rows[i]["valid"])
            sample["native_target"] = truth.argmax(0) if self.multiclass else truth
            sample["native_valid"] = torch.from_numpy(native[..., -1] > 0) if has_fov else None
        return sample


class SegmentationDataModule(MedxferDataModule):
    """Images with masks in one of the benchmark layouts or a generic table.

    Args:
        train: the training data: a DRIVE part folder (``DRIVE/training``), the Montgomery root,
            the SIIM ``train-rle.csv``, or an image + mask table; re-split by patient by
            ``split`` (the benchmark protocol: 10 % of training for validation).
        val, test: explicit validation / test data of the same layout (DRIVE: ``DRIVE/test``).
        layout: ``table``, ``drive``, ``montgomery`` or ``siim``.
        classes: names of the K mask channels (default: by layout -- ``vessel``, ``lung`` or
            ``left_lung`` / ``right_lung``, ``pneumothorax``, the table's mask columns).
        lungs: Montgomery: ``union`` (one lung channel) or ``left_right`` (two).
        image_column, mask_columns, valid_column, patient_column, group_columns: the generic
            table's columns (masks: one column per class; valid: a field-of-view mask).
        dicom_root: SIIM: the folder holding the DICOM files (searched recursively).
        rle_encoding: SIIM: ``relative`` (the challenge's original) or ``absolute``.
        unlisted: SIIM: a DICOM with no table row is an ``error`` or a ``negative``.
        skip_missing_images: SIIM: skip the table rows whose DICOM is absent (a partial
            download), counted and logged; without it the first is an error naming it.
            (``skip_bad_images`` would decode every DICOM at setup to find bad ones; this only
            skips the absent.)
        manual: DRIVE: the ``1st`` or ``2nd`` observer's vessels.
        multiclass: one class per pixel (targets are class indices; use ``Segmenter`` with
            ``multiclass: true``).
        mask_values: the stored values of background and foreground in mask and field-of-view
            files (DRIVE, Montgomery: 0 / 255; 0 / 1 masks: ``[0, 1]``); another value is an
            error naming the file.
        color: colour images (DRIVE) or grey (radiographs, repeated to ``channels``).
        channels: output channels of grey images.
        recipe: augmentation, ``xray`` or ``fundus`` (default by layout).
        image_size: the side images and masks are resized to (the benchmark: 224 for X-ray,
            512 for fundus).
        native_resolution: score validation and test sets at each image's native size (the
            ``Segmenter`` resizes its probabilities back, bilinear, then thresholds) against
            the masks as stored, inside the field of view; ``MaskWriter`` cuts predicted masks
            to the exact field of view. Default: at ``image_size``, against the resized masks.
        augment: the recipe's random augmentation in training.
        age_bins: edges of the age groups (Montgomery).
        split, split_seed, seed, batch_size, **kwargs: as for every datamodule
            (:class:`MedxferDataModule`: image checks, loader settings, subsets, ``cache``:
            an HDF5 cache from ``medxfer prepare``, holding images, masks and field of view).
    """

    default_name = "seg"
    default_batch_size = 8

    def __init__(
        self,
        train: str,
        layout: Layout = "table",
        classes: Sequence[str] | None = None,
        lungs: Literal["union", "left_right"] = "union",
        image_column: str = "image",
        mask_columns: Sequence[str] = ("mask",),
        valid_column: str | None = None,
        patient_column: str | None = None,
        group_columns: Sequence[str] = (),
        dicom_root: str | None = None,
        rle_encoding: Literal["relative", "absolute"] | None = None,
        unlisted: Literal["error", "negative"] = "error",
        skip_missing_images: bool = False,
        manual: Literal["1st", "2nd"] = "1st",
        multiclass: bool = False,
        mask_values: tuple[int, int] = (0, 255),
        color: bool | None = None,
        channels: int = 3,
        recipe: Literal["xray", "fundus"] | None = None,
        image_size: int = 224,
        native_resolution: bool = False,
        augment: bool = True,
        age_bins: Sequence[float] = (40, 60),
        **kwargs: Any,
    ) -> None:
        super().__init__(train, **kwargs)
        self.save_hyperparameters()
        if layout == "siim" and (dicom_root is None or rle_encoding is None):
            raise ValueError(
                "layout siim needs dicom_root (the DICOM folder) and rle_encoding (relative: the "
                "challenge's original encoding, or absolute), never guessed"
            )
        defaults = {
            "drive": ["vessel"],
            "montgomery": ["lung"] if lungs == "union" else ["left_lung", "right_lung"],
            "siim": ["pneumothorax"],
            "table": list(mask_columns),
        }
        self.labels = list(classes) if classes is not None else defaults[layout]
        self.color = layout == "drive" if color is None else color
        self.reader = "rgb" if self.color else "dicom" if layout == "siim" else "grey"
        self.recipe = recipe or ("fundus" if layout == "drive" else "xray")
        self._channels = 3 if self.color else channels

    #: What the task must produce (the CLI refuses a task of another kind).
    output_type = "segmentation"
    dataset_class = MaskDataset

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return self.hparams.image_size

    def cache_settings(self) -> CacheSettings:
        """Images as every datamodule caches them, with the K masks and the field of view as
        K + 1 label maps; what decides them (layout, classes, observer, lungs, values, RLE
        encoding) is recorded, so a cache of other masks is refused."""
        hp = self.hparams
        what = (
            f"{hp.layout}: masks {','.join(self.labels)} + field of view; values "
            f"{tuple(hp.mask_values)}; manual {hp.manual}; lungs {hp.lungs}; rle {hp.rle_encoding}"
        )
        return CacheSettings(self.reader, self.cache_side, len(self.labels) + 1, what)

    def cache_labels(self) -> LabelDecoder:
        """:func:`load_masks` with this datamodule's declared mask values."""
        return partial(load_masks, values=tuple(self.hparams.mask_values))

    def _sex(self, df: pd.DataFrame, field: str) -> pd.Series:
        """The ``sex`` column through the project's one list (:func:`normalise_sex`: F / M /
        Female / Male / blank; DICOM's ``O`` and anything else are an error naming the image,
        or ``Unknown`` with ``unknown_sex: true``)."""
        return normalise_sex(
            df["sex"].replace("unknown", ""),
            lambda i: f"{df['source'].iloc[i]}, image {Path(df['path'].iloc[i]).name}, {field}",
            self.unknown_sex,
        )

    def read_table(self, table: str, evaluation: bool = False) -> pd.DataFrame:
        """Read one dataset in this datamodule's layout; check its mask channels match."""
        hp = self.hparams
        if hp.layout == "drive":
            df = read_drive(table, hp.manual)
        elif hp.layout == "montgomery":
            df = read_montgomery(table, hp.lungs)
            df["sex"] = self._sex(df, "Patient's Sex of its ClinicalReadings file")
            df["age_group"] = age_groups(df["age"], hp.age_bins)
        elif hp.layout == "siim":
            df = read_siim(
                table, hp.dicom_root, hp.rle_encoding, hp.unlisted, hp.skip_missing_images
            )
            df["sex"] = self._sex(df, "the DICOM's PatientSex")
            df["encoding"] = hp.rle_encoding
        else:
            df = read_mask_table(
                table,
                hp.image_column,
                hp.mask_columns,
                hp.valid_column,
                None,
                hp.patient_column,
                None,
                hp.group_columns,
            )
        k = 1 if "rle" in df else len(df["masks"].iloc[0])
        if k != len(self.labels):
            raise ValueError(f"{table}: {k} mask channel(s) but classes {self.labels}")
        return df

    def group_columns(self) -> dict[str, str]:
        layout = self.hparams.layout
        if layout == "montgomery":
            return {"sex": "sex", "age": "age_group", "tb": "tb"}
        if layout == "siim":
            return {"sex": "sex"}
        return {c: c for c in self.hparams.group_columns}

    def targets(self, table: pd.DataFrame, what: str) -> np.ndarray:
        """Image-level presence per class where the table says (run-length rows), else NaN:
        masks are read with the images."""
        if "rle" in table:
            present = [[float(any(r not in ("-1", "") for r in rles))] for rles in table["rle"]]
            return np.array(present, dtype=np.float32)
        return np.full((len(table), len(self.labels)), np.nan, dtype=np.float32)

    def strata(self, train: pd.DataFrame) -> Sequence[object]:
        """SIIM: with or without pneumothorax; otherwise one stratum."""
        if "rle" in train:
            return ["positive" if t[0] == 1 else "negative" for t in self.targets(train, "train")]
        return ["all"] * len(train)

    def transform(self, train: bool) -> Callable[..., Any]:
        hp = self.hparams
        return SegmentationTransform(
            hp.image_size,
            self.recipe,
            train=train and hp.augment,
            channels=self._channels,
            seed=self.seed,
        )

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """:class:`MaskDataset` targets as class indices when ``multiclass``; the declared mask
        values; native-resolution masks in the evaluation sets with ``native_resolution``."""
        hp = self.hparams
        return {
            "multiclass": hp.multiclass,
            "mask_values": hp.mask_values,
            "native": hp.native_resolution and not train,
        }

    def loader_settings(self) -> dict[str, Any]:
        """The template's settings, collated by :func:`collate_masks` (native-size masks stay
        lists; every other batch is PyTorch's default collation)."""
        return {**super().loader_settings(), "collate_fn": collate_masks}

    def checked(self, table: pd.DataFrame, what: str, decode: bool = False) -> pd.DataFrame:
        """The template's image checks; with ``decode`` (``verify_images``) and no cache, also
        every mask and field-of-view file: decoded, its values checked and its size compared
        with its image's (:func:`load_masks`), so a mask of another size is an error naming
        both files before training starts (rows dropped, counted and logged with
        ``skip_bad_images``). A cache checked them when it was built."""
        table = super().checked(table, what, decode)
        if not decode or self.cache or "masks" not in table:
            return table
        values = tuple(self.hparams.mask_values)
        rows = table.to_dict("records")
        contexts = [f"line {r['line']} of {r['source']}" for r in rows]

        def check(k: int) -> str | None:
            try:
                shape = _image_shape(rows[k]["path"], self.images, contexts[k])
                load_masks(rows[k], shape, contexts[k], values)
            except ImageDecodeError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(max(1, min(self.num_workers, len(rows)))) as pool:
            errors = list(pool.map(check, range(len(rows))))
        bad = [e for e in errors if e is not None]
        if bad and not self.skip_bad_images:
            raise ImageDecodeError(f"{what}: {len(bad)} bad mask(s); first: {bad[0]}")
        if bad:
            log.warning(
                "%s: skipped %d row(s) of %d with a bad mask; first: %s",
                what,
                len(bad),
                len(rows),
                bad[0],
            )
            table = table[[e is None for e in errors]]
            self._check_not_empty(table, what, "skip_bad_images dropped rows with a bad mask")
        return table
