"""``export_backbone``: a fine-tuned or pre-trained task's backbone as a ``.safetensors`` file
with the metadata of :mod:`medxfer.backbones.exported` (architecture, input normalisation, the
chain of weights and data it came from), loadable by ``create_backbone(arch, pretrained=file)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from medxfer.errors import ConfigError

from .exported import EXPORT_FORMAT, EXPORT_KEY
from .weights import WeightsError, _torch_load

__all__ = ["export_backbone", "training_step_record"]


def training_step_record(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What one training run adds to a chain: its data (datamodule class, name, tables, label
    space), optimizer steps and epochs, from a Lightning checkpoint."""
    hp = checkpoint.get("hyper_parameters") or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    tables = {k: data.get(k) for k in ("train", "val", "test") if data.get(k) is not None}
    return {
        "trained_on": {
            "datamodule": str(
                data.get("_class_path", checkpoint.get("datamodule_hparams_name", ""))
            ),
            "name": data.get("name"),
            "tables": json.loads(json.dumps(tables, default=str)),
        },
        "labels": list(hp.get("label_names") or []),
        "steps": int(checkpoint.get("global_step", 0)),
        "epochs": int(checkpoint.get("epoch", 0)),
    }


def export_backbone(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False
) -> dict[str, Any]:
    """Write the backbone of a medxfer task checkpoint (``.ckpt``) to ``out`` (safetensors).

    Returns:
        The metadata written.

    Raises:
        ConfigError: ``out`` exists and ``force`` is false.
        WeightsError: the checkpoint holds no medxfer task (no ``backbone.*`` tensors, or no
            ``backbone`` hyper-parameter), naming it.
    """
    from safetensors.torch import save_file

    from medxfer import __version__

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if not out.name.lower().endswith(".safetensors"):
        raise WeightsError(f"{out}: the export is a .safetensors file; name it <name>.safetensors")
    ckpt = _torch_load(checkpoint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise WeightsError(f"{checkpoint}: not a Lightning checkpoint (no state_dict)")
    hp = ckpt.get("hyper_parameters") or {}
    tensors = {
        k[len("backbone.") :]: v.detach().contiguous()
        for k, v in ckpt["state_dict"].items()
        if k.startswith("backbone.") and isinstance(v, torch.Tensor)
    }
    if not tensors or not hp.get("backbone"):
        raise WeightsError(
            f"{checkpoint}: its task has no backbone to export (no 'backbone.*' tensors or no "
            "'backbone' hyper-parameter)"
        )
    start = hp.get("weights_chain") or [
        {"start": str(hp.get("initialised_from") or hp.get("pretrained") or "random init")}
    ]
    record = {**training_step_record(ckpt), "exported_to": out.name}
    meta = {
        "format": EXPORT_FORMAT,
        "architecture": str(hp["backbone"]),
        "input_norm": hp.get("input_norm"),
        "chain": [*start, record],
        "medxfer_version": __version__,
        "exported_from": str(checkpoint),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    save_file(tensors, str(tmp), metadata={EXPORT_KEY: json.dumps(meta)})
    os.replace(tmp, out)
    return meta
