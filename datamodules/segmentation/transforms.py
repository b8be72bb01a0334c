"""Joint image + mask augmentation of the segmentation benchmark (albumentations, masks with
nearest-neighbour interpolation, the field of view as a second mask):

* ``xray`` (pneumothorax, lungs): resize, random brightness / contrast, gamma, and one of
  optical, elastic or grid distortion;
* ``fundus`` (retinal vessels): resize, rotation, Gaussian noise, colour jitter, horizontal /
  vertical flips and transposition.

Evaluation: resize only. The image comes out as 8-bit pixels, as every medxfer transform but
mammography's (:class:`~medxfer.transforms.SeededTransform`); the task normalises it.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.data.cache import resize_labels
from medxfer.transforms import SeededTransform, unit_float

__all__ = ["SegmentationTransform"]


class SegmentationTransform(SeededTransform):
    """``(image, masks (H, W, K) uint8, valid (H, W) uint8)`` -> ``(image (C, S, S) uint8,
    masks (K, S, S) float, valid (S, S) bool)``.

    The image is resized like every medxfer image (:meth:`SeededTransform.prepare`: 8-bit
    pixels, those of a cache), the masks and field of view nearest-neighbour (class values stay
    exact, as in the cache). The training recipes' value steps (brightness, contrast, gamma,
    noise, colour jitter) and the distortions between them run in float, as the recipes were
    written, and the result is rounded to 8 bits.

    Args:
        image_size: the output side ``S``.
        recipe: ``xray`` or ``fundus`` (see the module docstring).
        train: apply the random augmentation.
        channels: output channels of a grey image (colour gives 3).
        seed: base seed of the transform's generators.
    """

    def __init__(
        self,
        image_size: int = 224,
        recipe: Literal["xray", "fundus"] = "xray",
        train: bool = False,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        steps: list[A.BasicTransform] = []
        if train and recipe == "xray":
            steps += [
                A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
                A.RandomGamma((80, 120), p=0.5),
                A.OneOf(
                    [
                        A.OpticalDistortion(distort_limit=0.1, p=1.0),
                        A.ElasticTransform(alpha=image_size * 0.1, sigma=image_size * 0.05, p=1.0),
                        A.GridDistortion(distort_limit=0.2, p=1.0),
                    ],
                    p=0.5,
                ),
            ]
        elif train and recipe == "fundus":
            steps += [
                A.Rotate(limit=30, border_mode=cv2.BORDER_CONSTANT, p=0.5),
                A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
                A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5),
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.Transpose(p=0.5),
            ]
        elif recipe not in ("xray", "fundus"):
            raise ValueError(f"recipe must be 'xray' or 'fundus', got {recipe!r}")
        super().__init__(
            A.Compose(steps, additional_targets={"valid": "mask"}, seed=seed),
            seed,
            image_size,
            channels=channels,
            train=train,
        )

    def __call__(
        self, image: np.ndarray, masks: np.ndarray, valid: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transform one image with its masks and field of view; see the class docstring."""
        x = self.prepare(image)
        side = self.resize
        masks = resize_labels(masks if masks.ndim == 3 else masks[..., None], side)
        valid = resize_labels(valid[..., None], side)[..., 0]
        if self.geometry.transforms:
            out = self.geometry(image=unit_float(x), mask=masks, valid=valid)
            x, masks, valid = out["image"], out["mask"], out["valid"]
        m = np.asarray(masks)
        m = m[..., None] if m.ndim == 2 else m
        target = torch.from_numpy(np.ascontiguousarray(m.transpose(2, 0, 1))).float()
        return self.finish(x), target, torch.from_numpy(np.asarray(valid) > 0)
