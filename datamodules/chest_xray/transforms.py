"""The chest X-ray recipe of Mustafa et al., "Supervised Transfer Learning at Scale for Medical
Imaging" (2021): rotation by up to ±20°, random crop, horizontal flip, additive brightness (±0.2)
and multiplicative contrast on the [-1, 1] scale, clipped to [-1, 1]. The geometry is the
generic recipe's (:class:`~medxfer.transforms.ImageTransform`, on 8-bit pixels); the value steps
are done here so that their amounts are exactly those of the paper on the [-1, 1] scale.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import torch

from medxfer.data.cache import quantise
from medxfer.transforms import ImageTransform

__all__ = ["RECIPES", "GreyImageTransform"]

#: The training augmentations a chest X-ray datamodule offers (``recipe``), as
#: :class:`GreyImageTransform` arguments: ``paper`` -- Mustafa et al. (2021), above; ``benchmark``
#: -- Hosseinzadeh Taher et al., "A Systematic Benchmarking Analysis of Transfer Learning for
#: Medical Image Analysis" (2021): random resized crop, horizontal flip, rotation by up to 7
#: degrees, no value changes.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "benchmark": {"rotate": 7.0, "crop": "resized", "brightness": 0.0, "contrast": (1.0, 1.0)},
}


class GreyImageTransform(ImageTransform):
    """Grey ``(H, W)`` image (float in [0, 1], or 8-bit) -> uint8 tensor ``(channels, S, S)``:
    the paper's recipe. The task normalises it for its weights.

    The brightness and contrast of a sample are computed in float on the [-1, 1] scale, for
    each of the 256 grey levels, and the result rounded to 8 bits: one look-up table applied to
    the 8-bit image, the same values as computing every pixel in float and quantising it.

    Args:
        image_size, resize: the output side ``S`` and the side before cropping (default
            ``S * 8 / 7``, i.e. 256 for 224), as for :class:`~medxfer.transforms.ImageTransform`.
        train: apply the random augmentation; otherwise resize and centre-crop only.
        brightness: maximum additive brightness change on the [-1, 1] scale.
        contrast: range of the multiplicative contrast factor.
        rotate, hflip, channels, seed, crop: as for :class:`~medxfer.transforms.ImageTransform`
            (the paper rotates by up to 20 degrees and crops at random; no vertical flip).
            Brightness 0 and contrast (1, 1) leave the pixel values alone: the geometry only
            (the benchmark recipe, :data:`RECIPES`).
    """

    def __init__(
        self,
        image_size: int = 224,
        resize: int | None = None,
        *,
        train: bool = False,
        brightness: float = 0.2,
        contrast: tuple[float, float] = (0.8, 1.2),
        rotate: float = 20.0,
        hflip: bool = True,
        channels: int = 3,
        seed: int = 0,
        crop: Literal["random", "resized"] = "random",
    ) -> None:
        super().__init__(
            image_size,
            resize,
            train,
            rotate=rotate,
            hflip=hflip,
            channels=channels,
            seed=seed,
            crop=crop,
        )
        self.brightness = brightness
        self.contrast = contrast

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one grey image; see the class docstring."""
        if image.ndim != 2:
            raise ValueError(f"expected a grey (H, W) image, got shape {image.shape}")
        x = self.augment(self.prepare(image))
        if self.train and (self.brightness or tuple(self.contrast) != (1.0, 1.0)):
            shift = self.rng.uniform(-self.brightness, self.brightness)
            factor = self.rng.uniform(*self.contrast)
            x = cv2.LUT(x, _value_table(shift, factor))
        return self.finish(x)


#: The 256 grey levels on the [-1, 1] scale.
_LEVELS = np.arange(256, dtype=np.float32) * np.float32(2 / 255) - np.float32(1)


def _value_table(shift: float, factor: float) -> np.ndarray:
    """The 8-bit look-up table of ``clip((x + shift) * factor, -1, 1)`` on the [-1, 1] scale,
    rounded to the nearest 8-bit level."""
    x = np.clip((_LEVELS + np.float32(shift)) * np.float32(factor), -1.0, 1.0)
    return quantise((x + np.float32(1)) * np.float32(0.5))
