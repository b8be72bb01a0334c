"""The dermatology recipe of Mustafa et al. (2021): rotation, flips, colour jitter and a Gaussian
blur of random strength on each photograph of a case."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SeededTransform

__all__ = ["DERM_BLUR_SIGMAS", "ColorImageTransform"]


#: Gaussian blur sigmas of the dermatology recipe (Mustafa et al. 2021), in pixels at 448 px.
DERM_BLUR_SIGMAS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 3.0, 5.0, 7.0)


class ColorImageTransform(SeededTransform):
    """RGB ``(H, W, 3)`` image (float in [0, 1], or 8-bit) -> uint8 tensor ``(3, S, S)``: the
    dermatology recipe of Mustafa et al. (2021). The task normalises it for its weights.

    Training: resize to ``S``, rotation ±30°, horizontal and vertical flips (on 8-bit pixels),
    then in float brightness ±0.1, contrast and saturation ±0.2, hue ±0.02, and a Gaussian blur
    whose sigma is drawn from ``blur_sigmas`` (given at 448 px and scaled to ``S``), rounded to
    8 bits at the end: colour jitter on 8-bit pixels would quantise the hue to OpenCV's 180
    levels. Evaluation: resize only. Resizing first (rather than rotating the full-size photo)
    costs a fraction of the time and makes a pre-resized cache give the same pixels as the
    files.
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
        steps: list[A.BasicTransform] = []
        if train:
            scale = image_size / 448
            steps += [A.Rotate(limit=rotate, border_mode=cv2.BORDER_REFLECT_101, p=1.0)]
            steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
            steps += [A.ToFloat(max_value=255)]  # the value steps in float (no random draw)
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
        super().__init__(A.Compose(steps, seed=seed), seed, image_size, train=train)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one RGB image; see the class docstring."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB (H, W, 3) image, got shape {image.shape}")
        return self.finish(self.augment(self.prepare(image)))
