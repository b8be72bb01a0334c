"""What every image transform shares: seeded random streams, the preamble (first resize, output
pixel format, channels) and the generic recipe of the table datamodule.

The modality recipes (chest X-ray, mammography, dermatology after Mustafa et al., "Supervised
Transfer Learning at Scale for Medical Imaging", 2021) live in their modality packages and
subclass :class:`SeededTransform`, which does what they all share:

* :meth:`~SeededTransform.prepare`: re-seed (training), then the first resize (``INTER_AREA``)
  in the transform's working format -- 8-bit pixels for most modalities, float32 in [0, 1] for
  those whose display pipeline keeps more than 8 bits (mammography);
* :meth:`~SeededTransform.finish`: the augmented image as a tensor ``(channels, S, S)`` of the
  transform's :attr:`~SeededTransform.dtype` -- ``uint8`` (0..255 standing for [0, 1]) or
  ``float16`` in [0, 1].

Transforms do not normalise: the task does, on the device, with the mean / std of its weights
(:meth:`medxfer.tasks.TransferTask.normalize_image`; DESIGN.md's batch contract). So a batch
crosses the loader's process boundary as uint8 (4x less than float32), a dataset never depends
on the model it feeds, and one dataset serves every weight source.

Why 8 bits: a float image is quantised once, right after the first resize, exactly as the HDF5
cache stores it (:func:`medxfer.data.cache.quantise`), so the files and the cache give the same
pixels, and everything after (rotation, crops, flips) runs on 8-bit pixels, which OpenCV
interpolates with rounding and 4x faster than float32 -- what makes reading from the cache
fast. Value steps that need more than 8 bits in between (the chest X-ray brightness / contrast
on the paper's [-1, 1] scale, colour jitter, blur, gamma) are computed in float and the result
rounded (not truncated) to 8 bits.

Every random transform owns its generators. In training they are re-seeded for every sample
from ``(seed, the sample's key)``: the key comes from the training sampler
(:class:`medxfer.resume.ResumableSampler`) and is a function of the run's seed, the epoch and
the sample's position in it, so augmentation does not depend on the number of workers, on
persistent worker state or on where a run was resumed. Without a key (a dataset read outside
the training loader) they are re-seeded from ``(seed, torch's initial seed)`` whenever the
latter changes, i.e. once per DataLoader worker.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import ClassVar, Literal, Protocol, runtime_checkable

import albumentations as A
import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from medxfer.data.cache import quantise, resize_square

__all__ = [
    "SIGNED",
    "DatasetTransform",
    "ImageTransform",
    "SeededTransform",
    "TenCropTransform",
    "resize_side",
    "sample_key",
    "unit_float",
]

#: The [-1, 1] scaling of BiT and Mustafa et al. (2021) as a mean / std pair.
SIGNED: dict[str, tuple[float, float, float]] = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def resize_side(image_size: int, resize: int | None = None) -> int:
    """The side a radiograph is resized to before a crop of ``image_size``: ``resize`` or
    ``image_size * 8 / 7`` (256 for 224, as in BiT)."""
    return resize or round(image_size * 8 / 7)


def unit_float(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 in [0, 1]: 8-bit pixels divided by 255, floats as they are."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return image.astype(np.float32, copy=False)


#: The key of the sample being read (see :func:`sample_key`); None outside the training loader.
_SAMPLE_KEY: int | None = None


@contextlib.contextmanager
def sample_key(key: int) -> Iterator[None]:
    """While a training sample is read, its key (from the sampler) seeds every
    :class:`SeededTransform` it goes through: one stream per sample, shared by the images of a
    multi-image case, a function of ``(transform seed, key)`` alone."""
    global _SAMPLE_KEY
    previous, _SAMPLE_KEY = _SAMPLE_KEY, int(key)
    try:
        yield
    finally:
        _SAMPLE_KEY = previous


@runtime_checkable
class DatasetTransform(Protocol):
    """What :class:`~medxfer.datamodules.ImageTableDataset` needs of its transform: the output
    side, channels and dtype (for the empty slots of a multi-image case), the seeded generator
    its random view choices draw from, and a way to re-seed it for the current sample."""

    image_size: int
    channels: int
    dtype: torch.dtype
    rng: np.random.Generator

    def reseed(self) -> None:
        """Re-seed the generators for the current sample (see :class:`SeededTransform`)."""
        ...

    def __call__(self, image: np.ndarray) -> torch.Tensor: ...


class SeededTransform:
    """Base of medxfer's image transforms: seeded streams and the shared preamble.

    ``geometry`` (an albumentations pipeline) and the NumPy generator ``rng`` are re-seeded
    from ``(seed, key)`` whenever the key changes, where the key is the current training
    sample's (:func:`sample_key`) or, outside the training loader, ``torch.initial_seed()``
    (different in every DataLoader worker): reproducible streams that do not depend on the
    workers.

    A subclass builds ``geometry`` without the first resize (:meth:`prepare` does it) and calls
    ``geometry`` and :meth:`finish` in its ``__call__``.

    Args:
        geometry: the random (training) or fixed (evaluation) steps after the first resize.
        seed: base seed of the generators.
        image_size: the output side ``S``.
        resize: the side of the first resize (what a cache stores; default ``S``).
        channels: output channels of a grey image (repeated); colour images give 3.
        train: re-seed for every sample (the random recipe); evaluation is deterministic.
    """

    #: The output tensor's dtype: uint8 (0..255 for [0, 1]), or float16 in [0, 1] where a
    #: modality's display pipeline keeps more than 8 bits (mammography).
    dtype: ClassVar[torch.dtype] = torch.uint8

    def __init__(
        self,
        geometry: A.Compose,
        seed: int,
        image_size: int,
        resize: int | None = None,
        channels: int = 3,
        train: bool = False,
    ) -> None:
        self.geometry = geometry
        self.seed = seed
        self.image_size = image_size
        self.resize = resize or image_size
        self.channels = channels
        self.train = train
        self.rng = np.random.default_rng(seed)
        self._seeded_for: int | None = None

    def reseed(self) -> None:
        """Re-seed ``rng`` and ``geometry`` from ``(seed, key)`` when the key (see the class
        docstring) changed since the last call; a no-op otherwise, so the images of one case
        share one stream."""
        key = _SAMPLE_KEY if _SAMPLE_KEY is not None else torch.initial_seed()
        if key != self._seeded_for:
            self._seeded_for = key
            seq = np.random.SeedSequence([self.seed, key % (2**63)])
            self.rng = np.random.default_rng(seq)
            self.geometry.set_random_seed(int(seq.generate_state(1)[0]))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Re-seed (in training) and resize to ``resize`` with ``INTER_AREA``.

        Float images (in [0, 1], from the decoders or a 16-bit cache) are resized in float32
        and, for an 8-bit transform, then quantised (:func:`~medxfer.data.cache.quantise`):
        exactly the pixels an 8-bit cache stores, so files and cache agree. 8-bit images (an
        8-bit cache) are resized as they are when their side differs (OpenCV rounds). A
        float16 transform works in float32 in [0, 1].

        Returns:
            ``(R, R)`` or ``(R, R, 3)`` uint8 (8-bit transforms) or float32 in [0, 1].
        """
        if self.train:
            self.reseed()
        side = self.resize
        if self.dtype != torch.uint8:
            return np.clip(resize_square(unit_float(image), side), 0.0, 1.0)
        if image.dtype == np.uint8:
            return resize_square(image, side)
        return quantise(resize_square(image.astype(np.float32, copy=False), side))

    def finish(self, image: np.ndarray) -> torch.Tensor:
        """The transformed image as a tensor ``(channels, S, S)`` (grey repeated to
        ``channels``; colour ``(S, S, 3)`` needs 3) of :attr:`dtype`: float pixels are clipped
        to [0, 1] and rounded to 8 bits (uint8) or cast (float16).

        Raises:
            ValueError: a colour image for a transform of other than 3 channels.
        """
        if self.dtype == torch.uint8:
            x = image if image.dtype == np.uint8 else quantise(image)
        else:
            x = np.clip(unit_float(image), 0.0, 1.0).astype(np.float16)
        if x.ndim == 2:  # repeated by NumPy: torch's copy of an expanded uint8 is far slower
            return torch.from_numpy(np.repeat(x[None], self.channels, axis=0))
        if self.channels != 3:
            raise ValueError(f"a colour image {x.shape} cannot become {self.channels} channel(s)")
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def augment(self, image: np.ndarray) -> np.ndarray:
        """``geometry`` applied to one image (nothing when it has no step)."""
        return self.geometry(image=image)["image"] if self.geometry.transforms else image


class ImageTransform(SeededTransform):
    """Grey ``(H, W)`` or colour ``(H, W, 3)`` image in [0, 1] (float) or 8-bit -> uint8 tensor
    ``(channels, S, S)``: the generic recipe of :class:`~medxfer.datamodules.image_table.ImageTable`.

    Training: resize to ``resize``, rotation by up to ``rotate`` degrees, a crop of ``S`` --
    ``random`` (a random ``S`` x ``S`` window) or ``resized`` (a random area of 8-100 % and
    aspect ratio 3/4-4/3 resized to ``S``, torchvision's ``RandomResizedCrop``; the benchmark of
    Hosseinzadeh Taher et al., 2021) -- then horizontal (and optionally vertical) flip, all on
    8-bit pixels. Evaluation: resize and centre crop. This is the usual fine-tuning recipe of
    BiT / ImageNet transfer; modality packages bring their own. The task normalises the output
    for its weights.

    Args:
        image_size: the output side ``S``.
        resize: side before cropping (default ``S * 8 / 7``; equal to ``S`` for no crop).
        train: apply the random augmentation.
        rotate: maximum rotation in degrees (0: none).
        crop: the training crop, ``random`` or ``resized`` (above).
        hflip, vflip: flip with probability 0.5.
        channels: output channels (grey is repeated; colour needs 3).
        seed: base seed of the transform's generators.
    """

    def __init__(
        self,
        image_size: int = 224,
        resize: int | None = None,
        train: bool = False,
        rotate: float = 0.0,
        hflip: bool = True,
        vflip: bool = False,
        channels: int = 3,
        seed: int = 0,
        crop: Literal["random", "resized"] = "random",
    ) -> None:
        if crop not in ("random", "resized"):
            raise ValueError(f"crop must be 'random' or 'resized', got {crop!r}")
        steps: list[A.BasicTransform] = []
        if train:
            if rotate:
                steps += [A.Rotate(limit=rotate, border_mode=cv2.BORDER_CONSTANT, p=1.0)]
            steps += [
                A.RandomCrop(image_size, image_size)
                if crop == "random"
                else A.RandomResizedCrop(size=(image_size, image_size), area_for_downscale="image")
            ]
            steps += [A.HorizontalFlip(p=0.5)] if hflip else []
            steps += [A.VerticalFlip(p=0.5)] if vflip else []
        else:
            steps += [A.CenterCrop(image_size, image_size)]
        super().__init__(
            A.Compose(steps, seed=seed),
            seed,
            image_size,
            resize_side(image_size, resize),
            channels,
            train,
        )

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one image; see the class docstring."""
        return self.finish(self.augment(self.prepare(image)))


class TenCropTransform:
    """Test-time ten-crop of an evaluation transform (Krizhevsky et al., 2012; the test protocol
    of Hosseinzadeh Taher et al., "A Systematic Benchmarking Analysis of Transfer Learning for
    Medical Image Analysis", 2021): resize to ``round(S * 256 / 224)`` (256 for ``S`` = 224,
    :func:`resize_side`), then the four corner and the centre crops of side ``S`` and their
    horizontal flips (torchvision's ``ten_crop``), stacked ``(10, C, S, S)``. The task averages
    the ten crops' probabilities (:meth:`medxfer.tasks.TransferTask.eval_outputs`).

    The wrapped transform's own resize and output steps (:meth:`SeededTransform.prepare`,
    :meth:`SeededTransform.finish`: 8-bit pixels or float16, grey repeated to ``channels``) make
    the resized image, so the crops hold exactly the pixels of its evaluation path; only its
    evaluation geometry (a centre crop, or none) is replaced.

    Args:
        base: the evaluation transform of a single-image dataset.
    """

    #: Crops per image.
    crops: ClassVar[int] = 10

    def __init__(self, base: SeededTransform) -> None:
        self.base = copy.copy(base)
        self.base.resize = resize_side(base.image_size)
        self.base.train = False
        self.image_size, self.channels, self.dtype = base.image_size, base.channels, base.dtype

    @property
    def rng(self) -> np.random.Generator:
        """The wrapped transform's generator (ten-crop itself draws nothing)."""
        return self.base.rng

    def reseed(self) -> None:
        """Re-seed the wrapped transform (see :meth:`SeededTransform.reseed`)."""
        self.base.reseed()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """The ten crops ``(10, C, S, S)`` of one image, in torchvision's order: top-left,
        top-right, bottom-left, bottom-right, centre, then the same of the flipped image."""
        full = self.base.finish(self.base.prepare(image))
        return torch.stack(TF.ten_crop(full, [self.image_size, self.image_size]))
