"""The dermatology recipe of Mustafa et al. (2021): rotation, flips, colour jitter and a Gaussian
blur of random strength on each photograph of a case."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SIGNED, Normalize, SeededTransform

__all__ = ["DERM_BLUR_SIGMAS", "ColorImageTransform"]


#: Gaussian blur sigmas of the dermatology recipe (Mustafa et al. 2021), in pixels at 448 px.
DERM_BLUR_SIGMAS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 3.0, 5.0, 7.0)


class ColorImageTransform(SeededTransform):
    """RGB ``(H, W, 3)`` float image in [0, 1] -> tensor ``(3, S, S)`` (the [-1, 1] scale, then the
    backbone's normalisation ``mean`` / ``std``): the
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
        mean: tuple[float, ...] = SIGNED["mean"],
        std: tuple[float, ...] = SIGNED["std"],
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.normalize = Normalize(mean, std)
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
        return self.normalize(
            torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32))
        )
