"""Natural-image targets of the scale study (CIFAR-10 / -100, Oxford Flowers-102, Oxford-IIIT
Pets): readers of their real downloads, a safe CIFAR unpickler, synthetic copies and the
multi-class datamodule for full- and few-shot transfer."""

from __future__ import annotations

from .datamodule import NATURAL_DATASETS, NaturalImageDataModule
from .readers import (
    CIFAR_FILES,
    SafeUnpickler,
    UnsafePickleError,
    cifar_classes,
    load_pickle,
    read_cifar,
    read_cifar_image,
    read_flowers,
    read_pets,
)
from .synthetic import (
    PETS_BREEDS,
    render_class,
    write_synthetic_cifar,
    write_synthetic_flowers,
    write_synthetic_pets,
)

__all__ = [
    "CIFAR_FILES",
    "NATURAL_DATASETS",
    "PETS_BREEDS",
    "NaturalImageDataModule",
    "SafeUnpickler",
    "UnsafePickleError",
    "cifar_classes",
    "load_pickle",
    "read_cifar",
    "read_cifar_image",
    "read_flowers",
    "read_pets",
    "render_class",
    "write_synthetic_cifar",
    "write_synthetic_flowers",
    "write_synthetic_pets",
]
