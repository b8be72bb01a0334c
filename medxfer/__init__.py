"""medxfer: transfer-learning studies on medical images with PyTorch Lightning.

The package reproduces, as reusable parts, the measurements of Mustafa et al., "Supervised
Transfer Learning at Scale for Medical Imaging" (2021): in-domain and shifted-domain
performance, data efficiency, subgroup gaps, calibration and feature reuse of fine-tuned
backbones. Sub-packages: ``medxfer.backbones``, ``medxfer.tasks``, ``medxfer.datamodules``,
``medxfer.metrics``, ``medxfer.callbacks``, ``medxfer.data``, and on top of them the ``medxfer``
command, ``medxfer.commands`` (see docs/architecture.md for the one-way layers).
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
