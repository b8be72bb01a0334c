"""Image transforms of the studies, seedable and independent per DataLoader worker.

The chest X-ray recipe follows Mustafa et al., "Supervised Transfer Learning at Scale for
Medical Imaging" (2021): rotation by up to ±20°, random crop, horizontal flip, pixel values
scaled to [-1, 1], additive brightness (±0.2), multiplicative contrast, and a final clip to
[-1, 1]. Geometry runs through albumentations; the value steps are done here so that their
amounts are exactly those of the paper on the [-1, 1] scale.

Every random transform owns its generators. They are re-seeded from ``(seed, torch's initial
seed)`` whenever the latter changes, which happens in each DataLoader worker (and each epoch
when workers are not persistent), so workers draw different streams and a run seeded with
``seed_everything`` is reproducible.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

__all__ = [
    "ColorImageTransform",
    "GreyImageTransform",
    "MammogramTransform",
    "SeededTransform",
    "resize_side",
]


def resize_side(image_size: int, resize: int | None = None) -> int:
    """The side a radiograph is resized to before a crop of ``image_size``: ``resize`` or
    ``image_size * 8 / 7`` (256 for 224, as in BiT)."""
    return resize or round(image_size * 8 / 7)


class SeededTransform:
    """Base of medxfer's random transforms: an albumentations ``geometry`` pipeline and a NumPy
    generator ``rng``, both re-seeded from ``(seed, torch.initial_seed())`` whenever the latter
    changes (in every DataLoader worker), so workers draw different, reproducible streams."""

    def __init__(self, geometry: A.Compose, seed: int) -> None:
        self.geometry = geometry
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._seeded_for: int | None = None

    def _reseed(self) -> None:
        key = torch.initial_seed()
        if key != self._seeded_for:
            self._seeded_for = key
            seq = np.random.SeedSequence([self.seed, key % (2**63)])
            self.rng = np.random.default_rng(seq)
            self.geometry.set_random_seed(int(seq.generate_state(1)[0]))


class GreyImageTransform(SeededTransform):
    """Grey ``(H, W)`` float image in [0, 1] -> tensor ``(channels, S, S)`` in [-1, 1].

    Args:
        image_size: the output side ``S``.
        resize: side the image is resized to before cropping (default ``S * 8 / 7``, i.e.
            256 for 224).
        train: apply the random augmentation; otherwise resize and centre-crop only.
        rotate: maximum rotation in degrees.
        brightness: maximum additive brightness change on the [-1, 1] scale.
        contrast: range of the multiplicative contrast factor.
        hflip: flip horizontally with probability 0.5.
        channels: number of output channels (the grey plane is repeated; 3 for RGB backbones).
        seed: base seed of the transform's generators.
    """

    def __init__(
        self,
        image_size: int = 224,
        resize: int | None = None,
        train: bool = False,
        rotate: float = 20.0,
        brightness: float = 0.2,
        contrast: tuple[float, float] = (0.8, 1.2),
        hflip: bool = True,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.resize = resize_side(image_size, resize)
        self.train = train
        self.brightness = brightness
        self.contrast = contrast
        self.channels = channels
        steps: list[A.BasicTransform] = [
            A.Resize(self.resize, self.resize, interpolation=cv2.INTER_AREA)
        ]
        if train:
            steps += [A.Rotate(limit=rotate, border_mode=cv2.BORDER_CONSTANT, p=1.0)]
            steps += [A.RandomCrop(image_size, image_size)]
            steps += [A.HorizontalFlip(p=0.5)] if hflip else []
        else:
            steps += [A.CenterCrop(image_size, image_size)]
        super().__init__(A.Compose(steps, seed=seed), seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one grey image; see the class docstring."""
        if image.ndim != 2:
            raise ValueError(f"expected a grey (H, W) image, got shape {image.shape}")
        if self.train:
            self._reseed()
        x = self.geometry(image=image.astype(np.float32))["image"] * 2.0 - 1.0
        if self.train:
            x = x + self.rng.uniform(-self.brightness, self.brightness)
            x = x * self.rng.uniform(*self.contrast)
            x = np.clip(x, -1.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        return t.expand(self.channels, -1, -1).contiguous()


#: Gaussian blur sigmas of the dermatology recipe (Mustafa et al. 2021), in pixels at 448 px.
DERM_BLUR_SIGMAS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 3.0, 5.0, 7.0)


class ColorImageTransform(SeededTransform):
    """RGB ``(H, W, 3)`` float image in [0, 1] -> tensor ``(3, S, S)`` in [-1, 1]: the
    dermatology recipe of Mustafa et al. (2021).

    Training: resize to ``S``, rotation ±30°, horizontal and vertical flips, brightness ±0.1,
    contrast and saturation ±0.2, hue ±0.02, and a Gaussian blur whose sigma is drawn from
    ``blur_sigmas`` (given at 448 px and scaled to ``S``). Evaluation: resize only. Resizing
    first (rather than rotating the full-size photo) costs a fraction of the time and makes a
    pre-resized cache give the same pixels as the files.
    """

    def __init__(
        self,
        image_size: int = 448,
        train: bool = False,
        rotate: float = 30.0,
        brightness: float = 0.1,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        blur_sigmas: tuple[float, ...] = DERM_BLUR_SIGMAS,
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.train = train
        steps: list[A.BasicTransform] = []
        if train:
            scale = image_size / 448
            steps += [A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA)]
            steps += [A.Rotate(limit=rotate, border_mode=cv2.BORDER_REFLECT_101, p=1.0)]
            steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
            steps += [A.ColorJitter(brightness, contrast, saturation, hue, p=1.0)]
            steps += [
                A.OneOf(
                    [
                        A.GaussianBlur(blur_limit=0, sigma_limit=(s * scale, s * scale), p=1.0)
                        for s in blur_sigmas
                    ],
                    p=1.0,
                )
            ]
        else:
            steps += [A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA)]
        super().__init__(A.Compose(steps, seed=seed), seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one RGB image; see the class docstring."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB (H, W, 3) image, got shape {image.shape}")
        if self.train:
            self._reseed()
        x = np.clip(self.geometry(image=image.astype(np.float32))["image"], 0.0, 1.0) * 2.0 - 1.0
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))


class MammogramTransform(SeededTransform):
    """Grey ``(H, W)`` mammogram in [0, 1] -> tensor ``(channels, S, S)`` in [-1, 1]: the
    mammography recipe of Mustafa et al. (2021).

    Training: horizontal and vertical flips, independent x / y scaling in ``scale``, and a grid
    (elastic-like) deformation. Evaluation: resize only. The laterality swap, which exchanges
    whole views, is done by the dataset.
    """

    def __init__(
        self,
        image_size: int = 2048,
        train: bool = False,
        scale: tuple[float, float] = (0.9, 1.1),
        grid_distortion: float = 0.15,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.train = train
        self.channels = channels
        steps: list[A.BasicTransform] = [
            A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA)
        ]
        if train:
            steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
            steps += [
                A.Affine(
                    scale={"x": scale, "y": scale},
                    keep_ratio=False,
                    border_mode=cv2.BORDER_CONSTANT,
                    p=1.0,
                )
            ]
            if grid_distortion > 0:
                steps += [
                    A.GridDistortion(
                        distort_limit=grid_distortion, border_mode=cv2.BORDER_CONSTANT, p=0.5
                    )
                ]
        super().__init__(A.Compose(steps, seed=seed), seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one grey mammogram; see the class docstring."""
        if self.train:
            self._reseed()
        x = np.clip(self.geometry(image=image.astype(np.float32))["image"], 0.0, 1.0) * 2.0 - 1.0
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        return t.expand(self.channels, -1, -1).contiguous()
