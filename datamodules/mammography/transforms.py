"""The mammography recipe of Mustafa et al. (2021): flips, independent x / y scaling and a grid
deformation of each view (the laterality swap of whole views is done by the dataset)."""

from __future__ import annotations

from typing import ClassVar

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SeededTransform

__all__ = ["MammogramTransform"]


class MammogramTransform(SeededTransform):
    """Grey ``(H, W)`` mammogram in [0, 1] -> float16 tensor ``(channels, S, S)`` in [0, 1]:
    the mammography recipe of Mustafa et al. (2021). The task normalises it for its weights.

    Mammograms are the one modality whose display pipeline keeps more than 8 bits (DICOM,
    12-16 bits stored, windowed by :func:`medxfer.data.dicom.read_dicom`): the transform works
    in float32 and hands out float16 (11 significant bits, half the traffic of float32) rather
    than 8-bit pixels.

    Training: horizontal and vertical flips, independent x / y scaling in ``scale``, and a grid
    (elastic-like) deformation. Evaluation: resize only. The laterality swap, which exchanges
    whole views, is done by the dataset.
    """

    dtype: ClassVar[torch.dtype] = torch.float16

    def __init__(
        self,
        image_size: int = 2048,
        train: bool = False,
        scale: tuple[float, float] = (0.9, 1.1),
        grid_distortion: float = 0.15,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        steps: list[A.BasicTransform] = []
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
        super().__init__(
            A.Compose(steps, seed=seed), seed, image_size, channels=channels, train=train
        )

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Transform one grey mammogram; see the class docstring."""
        return self.finish(self.augment(self.prepare(image)))
