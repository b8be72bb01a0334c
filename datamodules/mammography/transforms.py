"""The mammography recipe of Mustafa et al. (2021): flips, independent x / y scaling and a grid
deformation of each view (the laterality swap of whole views is done by the dataset)."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from medxfer.transforms import SIGNED, Normalize, SeededTransform

__all__ = ["MammogramTransform"]


class MammogramTransform(SeededTransform):
    """Grey ``(H, W)`` mammogram in [0, 1] -> tensor ``(channels, S, S)`` (the [-1, 1]
    scale, then the backbone's normalisation ``mean`` / ``std``): the
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
        mean: tuple[float, ...] = SIGNED["mean"],
        std: tuple[float, ...] = SIGNED["std"],
        seed: int = 0,
    ) -> None:
        self.image_size = image_size
        self.normalize = Normalize(mean, std)
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
        return self.normalize(t.expand(self.channels, -1, -1).contiguous())
