"""Experiment loggers that keep patient data at home.

:class:`WandbLogger` is Lightning's Weights & Biases logger with medxfer's defaults: offline
(runs are written locally and can be synced later with ``wandb sync``) when no API key is
configured, no model checkpoints uploaded, hyper-parameters with file paths redacted, and no
images, tables or media logged -- only scalars leave the machine. Case ids never reach a logger:
tasks log aggregate metrics only. W&B's own collection is switched off where it could carry
patient data or paths (:data:`PRIVATE_SETTINGS`): the console output (warnings quote image
paths), the command line and program path, code, git state and the machine description.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["PRIVATE_SETTINGS", "WandbLogger", "redact_paths", "wandb_credentials_available"]

log = logging.getLogger(__name__)

#: File name endings medxfer's inputs and outputs use: tables, images and volumes, arrays,
#: weights and checkpoints, archives and compression, configs, text. A value ending in one of
#: them is a file name even without a folder (``metadata_patient456.parquet``). The list is
#: explicit because a generic "name.ext" rule would take backbone names (``resnet50.dino``)
#: for files.
FILE_SUFFIXES = (
    "csv tsv txt parquet pq feather arrow xlsx xls json jsonl ndjson yaml yml toml xml html "
    "sqlite db lmdb pkl pickle "
    "dcm dicom png jpg jpeg tif tiff bmp gif webp jp2 svs ndpi nii mha mhd nrrd raw img "
    "h5 hdf5 npz npy zarr mat "
    "pth pt bin ckpt safetensors onnx "
    "tar tgz gz bz2 xz zst zip 7z rle"
).split()
#: A string that is a path or a file name: a folder separator, or a :data:`FILE_SUFFIXES` end.
_PATHLIKE = re.compile(rf"[/\\]|\.({'|'.join(FILE_SUFFIXES)})$", re.I)
#: Keys whose value is a location whatever it looks like (``root: scans``, ``cache: c1``).
_PATH_KEY = re.compile(r"(^|_)(path|paths|file|files|dir|dirs|dirpath|root|csv|cache|table)$")
REDACTED = "<path redacted>"

#: ``wandb.Settings`` that medxfer's logger always sets, over any the user passes: no console
#: capture, no system metadata (argv, program path, host), no code or git state, no machine info.
PRIVATE_SETTINGS: dict[str, Any] = {
    "console": "off",
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "disable_code": True,
    "disable_git": True,
    "save_code": False,
    "program": "medxfer",
    "x_save_requirements": False,
}


def wandb_credentials_available() -> bool:
    """Whether a W&B API key is configured (``WANDB_API_KEY`` or a ``~/.netrc`` entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def redact_paths(params: Any) -> Any:
    """``params`` with every path or file name replaced by a placeholder: strings with a folder
    separator or a file ending (:data:`FILE_SUFFIXES`, with or without a folder), ``Path``
    objects, and every string under a key that names a location (``csv``, ``root``,
    ``image_dir``, ``*_path``...).

    Example:
        >>> redact_paths({"csv": "cases", "table": "metadata_patient456.parquet", "lr": 0.1})
        {'csv': '<path redacted>', 'table': '<path redacted>', 'lr': 0.1}
    """
    if isinstance(params, Namespace):
        params = vars(params)
    if isinstance(params, dict):
        return {
            k: REDACTED
            if isinstance(v, str | Path)
            and _PATH_KEY.search(str(k).lower())
            and str(k).lstrip("_") != "class_path"  # a class's import path, not a location
            else redact_paths(v)
            for k, v in params.items()
        }
    if isinstance(params, list | tuple):
        return type(params)(redact_paths(v) for v in params)
    if isinstance(params, Path) or (isinstance(params, str) and _PATHLIKE.search(params)):
        return REDACTED
    if hasattr(params, "__dataclass_fields__"):
        return redact_paths({f: getattr(params, f) for f in params.__dataclass_fields__})
    return params


def private_settings(settings: Any = None) -> Any:
    """``wandb.Settings`` from the user's ``settings`` (a mapping or ``wandb.Settings``, or None)
    with :data:`PRIVATE_SETTINGS` applied over them."""
    import wandb

    if settings is None or isinstance(settings, dict):
        return wandb.Settings(**{**(settings or {}), **PRIVATE_SETTINGS})
    out = settings.model_copy()
    for key, value in PRIVATE_SETTINGS.items():
        setattr(out, key, value)
    return out


class WandbLogger(_LightningWandbLogger):
    """Weights & Biases logging of scalars only (see the module docstring).

    Args:
        project: the W&B project.
        name: the run's name.
        save_dir: local folder of the W&B files.
        offline: force offline (True) or online (False); default: offline when no API key.
        **kwargs: passed to Lightning's ``WandbLogger`` (``entity``, ``group``, ``tags``...).
    """

    def __init__(
        self,
        project: str = "medxfer",
        name: str | None = None,
        save_dir: str = "runs/wandb",
        offline: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = not wandb_credentials_available()
            if offline:
                log.info(
                    "no W&B API key configured: logging offline to %s (upload later with `wandb sync`)",
                    save_dir,
                )
        kwargs.pop("log_model", None)
        kwargs["settings"] = private_settings(kwargs.get("settings"))
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            project=project,
            name=name,
            save_dir=save_dir,
            offline=offline,
            log_model=False,
            **kwargs,
        )

    def log_hyperparams(self, params: Any) -> None:
        """Log hyper-parameters with file paths redacted."""
        super().log_hyperparams(redact_paths(params))

    def _refuse(self, what: str) -> None:
        rank_zero_warn(f"medxfer's WandbLogger does not upload {what} (patient data stays local)")

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("images")

    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("tables")

    def log_text(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("text tables")

    def log_audio(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("audio")

    def log_video(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("videos")
