"""Joint image + mask augmentation of the segmentation benchmark (albumentations, masks with
nearest-neighbour interpolation, the field of view as a second mask):

* ``xray`` (pneumothorax, lungs): resize, random brightness / contrast, gamma, and one of
  optical, elastic or grid distortion;
* ``fundus`` (retinal vessels): resize, rotation, Gaussian noise, colour jitter, horizontal /
  vertical flips and transposition.

Evaluation: resize only. The image ends on the backbone's normalisation, as every medxfer
transform (:class:`~medxfer.transforms.Normalize`).
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SIGNED, Normalize, SeededTransform

__all__ = ["SegmentationTransform"]


class SegmentationTransform(SeededTransform):
    """``(image, masks (H, W, K) uint8, valid (H, W) uint8)`` -> ``(image (C, S, S), masks
    (K, S, S) float, valid (S, S) bool)``.

    Args:
        image_size: the output side ``S``.
        recipe: ``xray`` or ``fundus`` (see the module docstring).
        train: apply the random augmentation.
        channels: output channels of a grey image (colour gives 3).
        mean, std: the backbone's input normalisation.
        seed: base seed of the transform's generators.
    """

    def __init__(
        self,
        image_size: int = 224,
        recipe: Literal["xray", "fundus"] = "xray",
        train: bool = False,
        channels: int = 3,
        mean: tuple[float, ...] = SIGNED["mean"],
        std: tuple[float, ...] = SIGNED["std"],
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.channels = channels
        self.train = train
        self.normalize = Normalize(mean, std)
        steps: list[A.BasicTransform] = [
            A.Resize(
                image_size,
                image_size,
                interpolation=cv2.INTER_AREA,
                mask_interpolation=cv2.INTER_NEAREST,  # as the cache: class values stay exact
            )
        ]
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
        super().__init__(A.Compose(steps, additional_targets={"valid": "mask"}, seed=seed), seed)

    def __call__(
        self, image: np.ndarray, masks: np.ndarray, valid: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transform one image with its masks and field of view; see the class docstring."""
        if self.train:
            self._reseed()
        out = self.geometry(image=image.astype(np.float32), mask=masks, valid=valid)
        x = np.clip(out["image"], 0.0, 1.0) * 2.0 - 1.0
        if x.ndim == 2:
            t = torch.from_numpy(np.ascontiguousarray(x))[None].expand(self.channels, -1, -1)
        else:
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        m = np.asarray(out["mask"])
        m = m[..., None] if m.ndim == 2 else m
        target = torch.from_numpy(np.ascontiguousarray(m.transpose(2, 0, 1))).float()
        return (
            self.normalize(t.float().contiguous()),
            target,
            torch.from_numpy(np.asarray(out["valid"]) > 0),
        )
