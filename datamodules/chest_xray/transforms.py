"""The chest X-ray recipe of Mustafa et al., "Supervised Transfer Learning at Scale for Medical
Imaging" (2021): rotation by up to ±20°, random crop, horizontal flip, additive brightness (±0.2)
and multiplicative contrast on the [-1, 1] scale, clipped to [-1, 1], then the backbone's input
normalisation. Geometry runs through albumentations; the value steps are done here so that
their amounts are exactly those of the paper on the [-1, 1] scale.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SIGNED, Normalize, SeededTransform, resize_side

__all__ = ["GreyImageTransform"]


class GreyImageTransform(SeededTransform):
    """Grey ``(H, W)`` float image in [0, 1] -> tensor ``(channels, S, S)``: the paper's recipe
    on the [-1, 1] scale, then the backbone's normalisation (``mean`` / ``std``; default [-1, 1]).

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
        mean, std: the backbone's input normalisation (:class:`~medxfer.transforms.Normalize`).
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
        mean: tuple[float, ...] = SIGNED["mean"],
        std: tuple[float, ...] = SIGNED["std"],
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.normalize = Normalize(mean, std)
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
        return self.normalize(t.expand(self.channels, -1, -1).contiguous())
