"""Backbones exported by medxfer (``medxfer export``): the metadata a ``.safetensors`` file
carries, read without torch.

An exported file holds the backbone's tensors and, in the safetensors header's
``__metadata__``, one JSON value under ``"medxfer"``:

* ``format``: ``medxfer-backbone/1``;
* ``architecture``: the name :func:`medxfer.backbones.create_backbone` takes;
* ``input_norm``: ``{"mean": [...], "std": [...]}`` the weights were trained with (what a task
  starting from the file normalises with);
* ``chain``: the weights' history, oldest first: where training started (a named source, a
  file, or random init) and, per training run, its data (sources, label space), optimizer
  steps and the file it was exported to -- ImageNet -> CheXpert -> target stays a recorded
  chain through export -> fine-tune -> export;
* ``medxfer_version`` and ``exported_from`` (the checkpoint).

Files in the weights folder (:func:`~medxfer.backbones.sources.weights_dir`) appear in
``medxfer list backbones`` under their architecture and are named by their stem
(``pretrained: chexpert_r50`` for ``chexpert_r50.safetensors``).

Why by hand: the safetensors header is an 8-byte length and JSON; reading it with ``json``
keeps ``medxfer list`` free of torch (``safetensors.safe_open`` needs a framework).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_KEY",
    "describe_chain",
    "exported_files",
    "read_export_metadata",
]

#: The metadata key of an exported file, and its format tag.
EXPORT_KEY = "medxfer"
EXPORT_FORMAT = "medxfer-backbone/1"
_MAX_HEADER = 100 * 2**20


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``medxfer`` metadata of a ``.safetensors`` file, or None when the file is not one
    medxfer exported (another safetensors file, or not safetensors at all)."""
    path = Path(path)
    if not path.name.lower().endswith(".safetensors") or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _MAX_HEADER:
                return None
            header = json.loads(f.read(size))
        value = json.loads(header.get("__metadata__", {}).get(EXPORT_KEY, "null"))
    except (OSError, struct.error, ValueError, AttributeError):
        return None
    if not isinstance(value, dict) or value.get("format") != EXPORT_FORMAT:
        return None
    return value


def exported_files(
    folder: str | os.PathLike[str],
) -> dict[str, dict[str, tuple[Path, dict[str, Any]]]]:
    """The exported backbones in ``folder``: architecture -> stem -> (file, metadata)."""
    folder = Path(folder)
    out: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.safetensors")):
        meta = read_export_metadata(path)
        if meta is not None:
            out.setdefault(str(meta.get("architecture")), {})[path.stem] = (path, meta)
    return out


def describe_chain(chain: list[dict[str, Any]]) -> str:
    """A chain in one line: its start, then the name of each training run's data
    (``bit-r50x1.bit-m -> chexpert -> tb``)."""
    return " -> ".join(
        str(step.get("start") or (step.get("trained_on") or {}).get("name") or "?")
        for step in chain
    )
