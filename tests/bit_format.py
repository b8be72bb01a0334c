"""Test helper: write a timm ResNetV2's weights in the official BiT ``.npz`` layout.

The mapping is written out here independently of ``medxfer.backbones.weights`` so that tests
check the loader against it (and against timm's own BiT loader)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["write_bit_npz"]


def write_bit_npz(model: torch.nn.Module, path: Path, head_classes: int = 7) -> None:
    """Write ``model`` (timm ResNetV2) with TensorFlow names and HWIO kernels, plus a head."""

    def tf(t: torch.Tensor) -> np.ndarray:
        return t.permute(2, 3, 1, 0).numpy() if t.ndim == 4 else t.numpy()

    sd = model.state_dict()
    out = {
        "resnet/root_block/standardized_conv2d/kernel": tf(sd["stem.conv.weight"]),
        "resnet/group_norm/gamma": tf(sd["norm.weight"]),
        "resnet/group_norm/beta": tf(sd["norm.bias"]),
        "resnet/head/conv2d/kernel": np.random.randn(1, 1, model.num_features, head_classes).astype(
            np.float32
        ),
        "resnet/head/conv2d/bias": np.zeros(head_classes, np.float32),
    }
    names = {"weight": "gamma", "bias": "beta"}
    for key, value in sd.items():
        m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
        if not m:
            continue
        unit = f"resnet/block{int(m[1]) + 1}/unit{int(m[2]) + 1:02d}/"
        rest = m[3]
        if rest == "downsample.conv.weight":
            out[unit + "a/proj/standardized_conv2d/kernel"] = tf(value)
        elif c := re.fullmatch(r"conv(\d)\.weight", rest):
            out[unit + "abc"[int(c[1]) - 1] + "/standardized_conv2d/kernel"] = tf(value)
        elif n := re.fullmatch(r"norm(\d)\.(weight|bias)", rest):
            out[unit + "abc"[int(n[1]) - 1] + f"/group_norm/{names[n[2]]}"] = tf(value)
    np.savez(path, **out)
