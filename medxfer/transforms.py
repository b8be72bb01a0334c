"""What every image transform shares: seeded random streams, the backbone's input normalisation,
and the generic recipe of the table datamodule.

The modality recipes (chest X-ray, mammography, dermatology after Mustafa et al., "Supervised
Transfer Learning at Scale for Medical Imaging", 2021) live in their modality packages. Each
works on the [-1, 1] scale of the paper and ends with :class:`Normalize`, which maps that scale
to the normalisation the chosen weights were trained with (BiT: [-1, 1] itself; torchvision and
the self-supervised ResNet-50s: ImageNet mean / std), so one recipe serves every weight source.

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
from collections.abc import Iterator

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = [
    "SIGNED",
    "ImageTransform",
    "Normalize",
    "SeededTransform",
    "resize_side",
    "sample_key",
]

#: The [-1, 1] scaling of BiT and Mustafa et al. (2021) as a mean / std pair.
SIGNED: dict[str, tuple[float, float, float]] = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def resize_side(image_size: int, resize: int | None = None) -> int:
    """The side a radiograph is resized to before a crop of ``image_size``: ``resize`` or
    ``image_size * 8 / 7`` (256 for 224, as in BiT)."""
    return resize or round(image_size * 8 / 7)


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


class SeededTransform:
    """Base of medxfer's random transforms: an albumentations ``geometry`` pipeline and a NumPy
    generator ``rng``, both re-seeded from ``(seed, key)`` whenever the key changes, where the
    key is the current training sample's (:func:`sample_key`) or, outside the training loader,
    ``torch.initial_seed()`` (different in every DataLoader worker): reproducible streams that
    do not depend on the workers."""

    def __init__(self, geometry: A.Compose, seed: int) -> None:
        self.geometry = geometry
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._seeded_for: int | None = None

    def _reseed(self) -> None:
        key = _SAMPLE_KEY if _SAMPLE_KEY is not None else torch.initial_seed()
        if key != self._seeded_for:
            self._seeded_for = key
            seq = np.random.SeedSequence([self.seed, key % (2**63)])
            self.rng = np.random.default_rng(seq)
            self.geometry.set_random_seed(int(seq.generate_state(1)[0]))


class Normalize:
    """A ``(C, H, W)`` tensor on the [-1, 1] scale -> ``(x01 - mean) / std`` per channel, where
    ``x01 = (x + 1) / 2``: the normalisation the backbone's weights were trained with.

    Computed as ``x * scale + shift``, so BiT's ``mean = std = 0.5`` is exactly the identity.
    A 1-channel image (a first conv whose RGB kernels were summed) uses the channel averages.

    Example:
        >>> Normalize((0.5,) * 3, (0.5,) * 3)(torch.tensor([[[-1.0, 1.0]]])).tolist()
        [[[-1.0, 1.0]]]
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"normalisation needs one positive std per mean, got {mean}, {std}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        std_t = torch.tensor(self.std)
        self.scale = 0.5 / std_t
        self.shift = (0.5 - torch.tensor(self.mean)) / std_t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise one image ``(C, H, W)``; see the class docstring."""
        c = x.shape[0]
        scale, shift = self.scale, self.shift
        if c != len(scale):
            if c != 1:
                raise ValueError(f"{c}-channel image but a {len(scale)}-channel normalisation")
            scale, shift = scale.mean(0, keepdim=True), shift.mean(0, keepdim=True)
        if torch.all(scale == 1) and torch.all(shift == 0):
            return x
        return x * scale[:, None, None] + shift[:, None, None]

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class ImageTransform(SeededTransform):
    """Grey ``(H, W)`` or colour ``(H, W, 3)`` image in [0, 1] -> tensor ``(channels, S, S)``,
    normalised for the backbone: the generic recipe of :class:`~medxfer.datamodules.ImageTable`.

    Training: resize to ``resize``, rotation by up to ``rotate`` degrees, random crop of ``S``,
    horizontal (and optionally vertical) flip. Evaluation: resize and centre crop. This is the
    usual fine-tuning recipe of BiT / ImageNet transfer; modality packages bring their own.

    Args:
        image_size: the output side ``S``.
        resize: side before cropping (default ``S * 8 / 7``; equal to ``S`` for no crop).
        train: apply the random augmentation.
        rotate: maximum rotation in degrees (0: none).
        hflip, vflip: flip with probability 0.5.
        channels: output channels (grey is repeated; colour needs 3).
        mean, std: the backbone's input normalisation (default: [-1, 1]).
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
        mean: tuple[float, ...] = SIGNED["mean"],
        std: tuple[float, ...] = SIGNED["std"],
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.resize = resize_side(image_size, resize)
        self.train = train
        self.channels = channels
        self.normalize = Normalize(mean, std)
        steps: list[A.BasicTransform] = [
            A.Resize(self.resize, self.resize, interpolation=cv2.INTER_AREA)
        ]
        if train:
            if rotate:
                steps += [A.Rotate(limit=rotate, border_mode=cv2.BORDER_CONSTANT, p=1.0)]
            steps += [A.RandomCrop(image_size, image_size)]
            steps += [A.HorizontalFlip(p=0.5)] if hflip else []
            steps += [A.VerticalFlip(p=0.5)] if vflip else []
        else:
            steps += [A.CenterCrop(image_size, image_size)]
        super().__init__(A.Compose(steps, seed=seed), seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one image; see the class docstring."""
        if self.train:
            self._reseed()
        x = np.clip(self.geometry(image=image.astype(np.float32))["image"], 0.0, 1.0) * 2.0 - 1.0
        if x.ndim == 2:
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
            t = t.expand(self.channels, -1, -1).contiguous()
        elif self.channels == 3:
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))
        else:
            raise ValueError(
                f"a colour image {image.shape} cannot become {self.channels} channel(s)"
            )
        return self.normalize(t)
