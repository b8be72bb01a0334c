"""What a named weight file is, and where it is read from: metadata only, no torch.

:class:`WeightSource` (one published weight file: name, URL, licence, the normalisation and
input size it was trained with) and :class:`InputConfig` are plain dataclasses, so the backbone
registry declares every source -- and ``medxfer list backbones`` prints them -- without
importing torch or timm. Reading and loading the files is :mod:`medxfer.backbones.weights`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLUSTERING",
    "CONTRASTIVE",
    "MEDICAL",
    "METHODS",
    "REDUNDANCY",
    "SUPERVISED",
    "TORCH_SUFFIXES",
    "WEIGHTS_DIR_ENV",
    "WEIGHT_SUFFIXES",
    "InputConfig",
    "WeightSource",
    "directory_message",
    "weights_dir",
]

#: The environment variable that moves the weights folder.
WEIGHTS_DIR_ENV = "MEDXFER_WEIGHTS_DIR"
#: Names of torch weight files (read with ``torch.load(weights_only=True)``).
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")
#: Every weight file name medxfer reads.
WEIGHT_SUFFIXES = (".npz", ".safetensors", *TORCH_SUFFIXES)


#: Pre-training methods, the groups of ``medxfer list backbones`` (the taxonomy of Ericsson et
#: al., CVPR 2021, and Hosseinzadeh Taher et al., DART 2021), in the order they are listed.
SUPERVISED = "supervised"
CONTRASTIVE = "contrastive instance discrimination"
CLUSTERING = "clustering"
REDUNDANCY = "redundancy reduction / distillation"
MEDICAL = "in-domain / domain-adaptive medical"
METHODS = (SUPERVISED, CONTRASTIVE, CLUSTERING, REDUNDANCY, MEDICAL)


def weights_dir() -> Path:
    """The local folder named weights are read from: ``$MEDXFER_WEIGHTS_DIR`` or
    ``~/.cache/medxfer/weights``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medxfer" / "weights"


def directory_message(path: Path) -> str:
    """``weight file <path> is a directory``, naming the weight files inside it: a downloaded
    model's folder is a common thing to pass instead of its file."""
    inside = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES)
    )
    shown = f"; weight files inside it: {', '.join(inside[:5])}" if inside else ""
    return f"weight file {path} is a directory, not a file{shown}"


@dataclass(frozen=True)
class WeightSource:
    """Metadata of one published weight file, in the manner of timm's ``PretrainedCfg``.

    Attributes:
        filename: the exact file name expected in :func:`weights_dir`.
        url: where a user downloads it (medxfer itself never downloads).
        description: pre-training data and method, one line.
        licence: the licence the authors published the weights under.
        mean, std: input normalisation the weights were trained with (per RGB channel); read
            by :func:`medxfer.backbones.input_config`.
        input_size: (C, H, W) of pre-training.
        method: the pre-training method, one of :data:`METHODS`.
        layout: the file's key layout as published (wrapper, prefix, what is left out).
        parent: the weights this source's training started from (a named source such as
            ``resnet50.supervised``, or ``random init``); "" when none is recorded.
        data: the pre-training data of this source's own training (``CheXpert``).
        convert: the ``medxfer convert`` subcommand that writes :attr:`filename` from the
            release ("" when the release loads as it is).
    """

    filename: str
    url: str
    description: str
    licence: str = "see url"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_size: tuple[int, int, int] = (3, 224, 224)
    method: str = SUPERVISED
    layout: str = "torchvision state dict"
    parent: str = ""
    data: str = ""
    convert: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"{self.filename}: method {self.method!r} is not one of {METHODS}")

    def path(self) -> Path:
        """Where this file is expected locally."""
        return weights_dir() / self.filename


@dataclass(frozen=True)
class InputConfig:
    """How a backbone's weights expect their inputs (timm's ``pretrained_cfg`` subset).

    Attributes:
        mean, std: per-RGB-channel normalisation, ``x = (pixel / 255 - mean) / std``.
        input_size: (C, H, W) of pre-training, None if unknown.
        origin: one line saying where the values came from.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int] | None
    origin: str
