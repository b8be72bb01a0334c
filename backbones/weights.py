"""Weight files for backbones: where named weights live, how each file format is read, and a
strict, reported load.

Silently training from random initialisation because a checkpoint's keys did not match is the
worst failure a transfer-learning study can have, so every load here reports matched, missing
and unexpected keys and raises when any of the backbone's own tensors is left unmatched.

Formats read (never with unrestricted pickle):

* the official BiT ``.npz`` checkpoints (Kolesnikov et al., "Big Transfer (BiT): General Visual
  Representation Learning", ECCV 2020), whose TensorFlow names such as
  ``resnet/block1/unit01/a/standardized_conv2d/kernel`` are mapped onto timm's ResNetV2;
* torch files (``.pth``, ``.pt``, ``.bin``, ``.tar``, ``.ckpt``) through
  ``torch.load(weights_only=True)``;
* ``.safetensors``.

Self-supervised checkpoints (SwAV, MoCo, Barlow Twins, DINO, ...) come wrapped in
``state_dict`` / ``model`` keys and prefixed (``module.``, ``module.encoder_q.``, ...); the
wrapper and prefix that match the model best are found and projection heads, prototypes,
momentum encoders and queues are left out and reported as unexpected. A tensor the file holds
inside the backbone's own modules that the backbone has no place for (ResNet-34 weights for a
ResNet-18: 96 of them in ``layer1.2`` ... ``layer4.2``) means another architecture and is an
error, unless the caller allows it (``allow_unexpected``).

Every error about a file's content is a :class:`WeightsError` (a missing file stays
``FileNotFoundError``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medxfer.errors import WeightsError

from .sources import InputConfig, WeightSource, weights_dir

__all__ = [
    "HEAD_NAMES",
    "InputConfig",
    "LoadReport",
    "WeightSource",
    "WeightsError",
    "bit_npz_to_state_dict",
    "load_backbone_weights",
    "read_checkpoint_hparams",
    "read_weight_file",
    "weights_dir",
]

log = logging.getLogger(__name__)

#: Prefixes under which self-supervised and distributed checkpoints store the encoder.
SSL_PREFIXES: tuple[str, ...] = (
    "",
    "module.",
    "module.encoder_q.",
    "module.encoder.",
    "module.backbone.",
    "module.online_network.encoder.",
    "backbone.",
    "encoder.",
    "encoder_q.",
    "model.",
    "model.backbone.",
)
#: Keys of a wrapping dict that hold the weights, tried in this order.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "teacher", "network", "params")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")
#: First names of checkpoint keys that belong to classifiers and self-supervised heads, not to
#: a backbone: unexpected tensors under them are left out without complaint.
HEAD_NAMES = frozenset(
    {
        "fc",
        "head",
        "heads",
        "classifier",
        "last_linear",
        "projector",
        "projection",
        "projection_head",
        "prototypes",
        "predictor",
    }
)


@dataclass
class LoadReport:
    """What a weight load matched, and what it left out.

    Attributes:
        path: the file read.
        prefix: the key prefix stripped from the checkpoint ('' for none).
        matched: model keys filled from the file.
        missing: model keys the file did not provide (allowed only for heads and counters).
        unexpected: file keys the model has no place for (heads, projectors, queues...).
        adapted_input: whether the first conv was adapted to another number of input channels.
    """

    path: str
    prefix: str = ""
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted_input: bool = False

    def summary(self) -> str:
        """One line: counts and the first few names of each list."""

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")

        return (
            f"{self.path}: {len(self.matched)} matched, {len(self.missing)} missing"
            f"{' [' + few(self.missing) + ']' if self.missing else ''}, "
            f"{len(self.unexpected)} unexpected{' [' + few(self.unexpected) + ']' if self.unexpected else ''}"
            f"{', prefix ' + repr(self.prefix) if self.prefix else ''}"
            f"{', first conv adapted to the input channels' if self.adapted_input else ''}"
        )


# --------------------------------------------------------------------------------------- BiT npz
_BIT_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^resnet/root_block/standardized_conv2d/kernel$", "stem.conv.weight"),
        (r"^resnet/group_norm/gamma$", "norm.weight"),
        (r"^resnet/group_norm/beta$", "norm.bias"),
        (r"^resnet/head/conv2d/kernel$", "head.fc.weight"),
        (r"^resnet/head/conv2d/bias$", "head.fc.bias"),
        (
            r"^resnet/block(\d+)/unit(\d+)/a/proj/standardized_conv2d/kernel$",
            "{s}.downsample.conv.weight",
        ),
        (r"^resnet/block(\d+)/unit(\d+)/([abc])/standardized_conv2d/kernel$", "{s}.conv{n}.weight"),
        (r"^resnet/block(\d+)/unit(\d+)/([abc])/group_norm/gamma$", "{s}.norm{n}.weight"),
        (r"^resnet/block(\d+)/unit(\d+)/([abc])/group_norm/beta$", "{s}.norm{n}.bias"),
    )
)


def _bit_key(key: str) -> str | None:
    for pattern, repl in _BIT_RULES:
        m = pattern.match(key)
        if m is None:
            continue
        if not m.groups():
            return repl
        stage, unit = int(m.group(1)) - 1, int(m.group(2)) - 1
        n = "abc".index(m.group(3)) + 1 if len(m.groups()) > 2 else 0
        return repl.format(s=f"stages.{stage}.blocks.{unit}", n=n)
    return None


def bit_npz_to_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map an official BiT checkpoint onto timm ``ResNetV2`` keys.

    TensorFlow kernels are HWIO and become OIHW; keys outside the known layout are kept under
    their own name so that the load reports them as unexpected rather than losing them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        tensor = torch.from_numpy(
            np.ascontiguousarray(value.transpose(3, 2, 0, 1) if value.ndim == 4 else value)
        )
        out[_bit_key(key) or key] = tensor
    return out


# --------------------------------------------------------------------------------- file reading
def read_weight_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{key: tensor}`` dict, unwrapping container dicts.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: the format is unknown, the file is a pickle that is not weights-only, or
            it holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    name = path.name.lower()
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return (
            bit_npz_to_state_dict(arrays)
            if any(k.startswith("resnet/") for k in arrays)
            else {k: torch.from_numpy(v) for k, v in arrays.items()}
        )
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    if not name.endswith(TORCH_SUFFIXES):
        raise WeightsError(
            f"{path}: unknown weight format; expected .npz (BiT), .safetensors or a torch file "
            f"({', '.join(TORCH_SUFFIXES)})"
        )
    return _unwrap(_torch_load(path), path)


def _torch_load(path: Path) -> object:
    """``torch.load`` restricted to tensors and plain containers (no code runs).

    Raises:
        WeightsError: the file is a pickle that is not weights-only.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused to load, the file is a pickle that is not weights-only (it may run "
            f"arbitrary code). Re-save its tensors with torch.save(state_dict) or as .safetensors. "
            f"Detail: {str(err).splitlines()[0]}"
        ) from None


def read_checkpoint_hparams(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """The ``hyper_parameters`` of a Lightning checkpoint (``.ckpt``), read weights-only.

    Returns None when the file is not a ``.ckpt``, holds no ``hyper_parameters`` dict, or holds
    objects that a weights-only load refuses (such a file is never unpickled here).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.name.lower().endswith(".ckpt"):
        return None
    try:
        obj = _torch_load(path)
    except ValueError as err:
        log.info("%s: hyper_parameters not read (%s)", path, str(err).splitlines()[0])
        return None
    hparams = obj.get("hyper_parameters") if isinstance(obj, dict) else None
    return hparams if isinstance(hparams, dict) else None


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Descend through wrapper keys until a dict of tensors is found."""
    while isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return tensors
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    raise WeightsError(f"{path}: no tensors found (looked inside keys {', '.join(WRAPPER_KEYS)})")


# ------------------------------------------------------------------------------------ loading
def _best_prefix(keys: list[str], model_keys: set[str]) -> str:
    def score(prefix: str) -> int:
        return sum(1 for k in keys if k.startswith(prefix) and k[len(prefix) :] in model_keys)

    return max(SSL_PREFIXES, key=lambda p: (score(p), len(p)))


def _allowed_missing(key: str, classifier: str | None) -> bool:
    return key.endswith("num_batches_tracked") or bool(
        classifier and key.startswith(classifier + ".")
    )


def _inside_backbone(key: str, prefix: str, owned: set[str], heads: set[str]) -> bool:
    """Whether an unexpected file ``key`` lies inside one of the backbone's own modules
    (``owned``: the first names of its keys) rather than under a head or outside the encoder."""
    if not key.startswith(prefix):
        return False  # another part of the checkpoint: a momentum encoder, a queue
    first = key[len(prefix) :].split(".", 1)[0]
    return first in owned and first not in heads


def load_backbone_weights(
    model: nn.Module, path: str | os.PathLike[str], allow_unexpected: bool = False
) -> LoadReport:
    """Load ``path`` into ``model`` strictly and return what matched.

    The first convolution is adapted when the file was trained on another number of input
    channels (e.g. RGB weights for 1-channel X-rays: the kernel is summed over RGB, timm's
    ``adapt_input_conv``). The report (matched / missing / unexpected counts) is logged at INFO.

    Args:
        model: the backbone.
        path: the weight file.
        allow_unexpected: load even when the file holds tensors inside the backbone's modules
            that it has no place for (another architecture's blocks), with a warning; for
            experts loading a deliberately larger checkpoint.

    Raises:
        WeightsError: a backbone tensor is missing from the file or has another shape, or (unless
            ``allow_unexpected``) the file holds unexpected tensors inside the backbone's
            modules (beyond the heads of :data:`HEAD_NAMES` and the classifier); the message
            lists them.
    """
    from timm.models import adapt_input_conv

    state = read_weight_file(path)
    model_state = model.state_dict()
    prefix = _best_prefix(list(state), set(model_state))
    report = LoadReport(path=str(path), prefix=prefix)
    chosen: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        local = key[len(prefix) :] if key.startswith(prefix) else None
        if local is None or local not in model_state:
            report.unexpected.append(key)
        else:
            chosen[local] = value

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    first_conv = cfg.get("first_conv")
    first_key = f"{first_conv}.weight" if first_conv else None
    if first_key in chosen and chosen[first_key].ndim == 4:
        want = model_state[first_key].shape[1]
        if chosen[first_key].shape[1] != want:
            chosen[first_key] = adapt_input_conv(want, chosen[first_key].float()).to(
                chosen[first_key].dtype
            )
            report.adapted_input = True

    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in chosen.items()
        if v.shape != model_state[k].shape
    ]
    report.missing = [k for k in model_state if k not in chosen]
    report.matched = [k for k in model_state if k in chosen]
    fatal = [k for k in report.missing if not _allowed_missing(k, cfg.get("classifier"))]
    owned = {k.split(".", 1)[0] for k in model_state}
    heads = set(HEAD_NAMES) | {str(cfg.get("classifier") or "fc").split(".", 1)[0]}
    foreign = [k for k in report.unexpected if _inside_backbone(k, prefix, owned, heads)]
    if foreign and allow_unexpected:
        log.warning(
            "%s: %d tensor(s) inside the backbone's modules have no place in it and are left "
            "out (allow_unexpected): %s",
            path,
            len(foreign),
            ", ".join(foreign[:10]),
        )
    elif foreign:
        shown = ", ".join(foreign[:10]) + (
            f", ... (+{len(foreign) - 10})" if len(foreign) > 10 else ""
        )
        raise WeightsError(
            f"{path}: {len(foreign)} tensor(s) in the file lie inside the backbone's modules but "
            f"have no place in it: a different architecture? ({report.summary()}). Unexpected: "
            f"{shown}. Choose the backbone the file was trained for, or set "
            "allow_unexpected: true to load it anyway."
        )
    if mismatched or fatal:
        lines = [f"{path}: weights do not fit the backbone ({report.summary()})."]
        if fatal:
            lines.append(
                f"Backbone tensors missing from the file ({len(fatal)}): " + ", ".join(fatal)
            )
        if mismatched:
            lines.append(f"Shape mismatches ({len(mismatched)}): " + "; ".join(mismatched))
        raise WeightsError("\n".join(lines))
    model.load_state_dict(chosen, strict=False)
    log.info("loaded weights %s", report.summary())
    return report
