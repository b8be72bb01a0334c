"""Backbone registry: every pre-trained network a study may start from, behind one call.

``create_backbone(name, pretrained=None, in_chans=3, **kw)`` returns a module whose
``forward(x)`` gives pooled features ``(B, num_features)`` and which declares its stages through
``feature_info`` and ``forward_intermediates(x, indices)`` (timm's interface), so CKA, weight
drift and stage-wise freezing never need module-name hooks.

Registered architectures (names read ``arch.source`` when a weight source is chosen, e.g.
``bit-r50x1.bit-m``):

* ``bit-r50x1`` ... ``bit-r152x4``: BiT ResNet-v2 with GroupNorm and weight standardisation
  (Kolesnikov et al., ECCV 2020), sources ``bit-s`` (ImageNet-1k) and ``bit-m`` (ImageNet-21k);
* ``resnet50v2-bn``: the BatchNorm ResNet50-v2 baseline of Mustafa et al., "Supervised Transfer
  Learning at Scale for Medical Imaging" (2021);
* ``resnet50``: the torchvision-layout ResNet-50 zoo of the transfer benchmarks (Ericsson et
  al., "How Well Do Self-Supervised Models Transfer?", CVPR 2021; Hosseinzadeh Taher et al., "A
  Systematic Benchmarking Analysis of Transfer Learning for Medical Image Analysis", DART
  2021): supervised (ImageNet, iNat2021), contrastive, clustering, redundancy-reduction /
  distillation and the benchmark's in-domain and domain-adapted chest X-ray models, grouped by
  ``WeightSource.method``; BYOL and SimCLR through ``medxfer convert`` (:mod:`.convert`);
* ``timm/<any timm model name>``.

``input_config(name, pretrained)`` says how the chosen weights expect their inputs (mean, std,
pre-training size), so that transforms normalise the way the weights were trained.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medxfer.errors import ConfigError, UnknownNameError
from medxfer.registry import Registry

from .exported import exported_files, read_export_metadata
from .sources import (
    CLUSTERING,
    CONTRASTIVE,
    MEDICAL,
    REDUNDANCY,
    InputConfig,
    WeightSource,
    directory_message,
    weights_dir,
)

if TYPE_CHECKING:
    from torch import nn

    from .weights import LoadReport, WeightsError, load_backbone_weights, read_weight_file

__all__ = [
    "BACKBONES",
    "INPUT_NORM_KEY",
    "InputConfig",
    "LoadReport",
    "WeightSource",
    "WeightsError",
    "create_backbone",
    "input_config",
    "list_backbones",
    "load_backbone_weights",
    "parameter_stages",
    "read_weight_file",
    "register_backbone",
    "resolve_weights",
    "stage_names",
    "weights_chain",
    "weights_dir",
]

log = logging.getLogger(__name__)

#: Names this package exports from :mod:`.weights` (torch), imported on first use, so that
#: ``import medxfer.backbones`` -- the registry, ``medxfer list backbones`` -- imports neither
#: torch nor timm; building a backbone does.
_FROM_WEIGHTS = ("LoadReport", "WeightsError", "load_backbone_weights", "read_weight_file")


def __getattr__(name: str) -> Any:
    if name in _FROM_WEIGHTS:
        return getattr(importlib.import_module(f"{__name__}.weights"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", group="medxfer.backbones")


def register_backbone(
    name: str, *, sources: dict[str, WeightSource] | None = None, description: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``f(in_chans=..., num_classes=..., **kw) -> nn.Module``.

    Args:
        name: the architecture's name (no dots; the source follows a dot at look-up).
        sources: named weight files this architecture can start from.
        description: one line for ``medxfer list backbones`` (default: the docstring's first line).
    """
    if "." in name:
        raise ValueError(f"backbone name {name!r} must not contain '.', which separates the source")
    return BACKBONES.register(name, description=description, sources=dict(sources or {}))


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered architecture names matching ``pattern``; ``timm/<name>`` works besides these."""
    return BACKBONES.names(pattern)


def stage_names(model: nn.Module) -> list[str]:
    """Module names of the backbone's declared stages (``feature_info``), shallow to deep."""
    info = model.feature_info
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    return [d["module"] for d in info]


def parameter_stages(model: nn.Module) -> dict[str, str]:
    """Map each parameter name to the declared stage it belongs to.

    A parameter belongs to the first stage whose module ends at or after the parameter's module
    (in module order), so a stem declared by its activation (timm ResNet's ``act1``) still owns
    ``conv1`` and ``bn1``. Parameters after the last stage (final norm, head) map to ``"head"``.
    """
    modules = list(model.named_modules())
    position = {name: i for i, (name, _) in enumerate(modules)}
    ends = []
    for stage in stage_names(model):
        inside = [i for n, i in position.items() if n == stage or n.startswith(stage + ".")]
        ends.append((max(inside), stage))
    out: dict[str, str] = {}
    for mname, module in modules:
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            out[full] = next((s for end, s in ends if position[mname] <= end), "head")
    return out


def _create_timm_model(model_name: str, **kw: Any) -> nn.Module:
    import timm  # here, not at import: timm registers every model it has (seconds)

    return timm.create_model(model_name, pretrained=False, **kw)


def _timm_factory(model_name: str) -> Callable[..., nn.Module]:
    return functools.partial(_create_timm_model, model_name)


def _split_name(
    name: str, pretrained: str | os.PathLike[str] | None
) -> tuple[str, str | os.PathLike[str] | None]:
    """``arch.source`` -> ``(arch, source)``; ``timm/<name>`` is kept whole (its dot is timm's
    pretrained tag)."""
    if name.startswith("timm/"):
        return name, pretrained
    arch, _, source = name.partition(".")
    if not source:
        return arch, pretrained
    if pretrained is not None and str(pretrained) != source:
        raise ConfigError(f"{name!r} names source {source!r} but pretrained={pretrained!r}")
    return arch, source


def resolve_weights(arch: str, pretrained: str | os.PathLike[str]) -> Path:
    """Turn ``pretrained`` (a named source of ``arch`` or a local path) into an existing file.

    Raises:
        FileNotFoundError: the named file is not in the weights directory (the message says
            which file to put where) or the path does not exist.
        IsADirectoryError: the path (or the named file) is a directory.
        UnknownNameError: (a ``KeyError``) the name is neither a source of ``arch`` nor a path.
    """
    text = str(pretrained)
    sources: dict[str, WeightSource] = (
        {} if arch.startswith("timm/") else BACKBONES.entry(arch).metadata["sources"]
    )
    if text in sources:
        src = sources[text]
        if src.path().is_dir():
            raise IsADirectoryError(directory_message(src.path()))
        if not src.path().is_file():
            raise FileNotFoundError(
                f"weights {arch}.{text} not found: put {src.filename} at {src.path()} "
                f"(download: {src.url}), or set MEDXFER_WEIGHTS_DIR to the folder holding it, "
                f"or pass pretrained=<path to the file>"
            )
        return src.path()
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise IsADirectoryError(directory_message(path))
    if arch.startswith("timm/") and text == "timm":
        for suffix in (".safetensors", ".pth", ".bin"):
            candidate = weights_dir() / "timm" / f"{arch[5:]}{suffix}"
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"weights for {arch} not found: put the model's file at "
            f"{weights_dir() / 'timm' / (arch[5:] + '.safetensors')} (from the Hugging Face hub "
            f"page timm/{arch[5:]}), or pass pretrained=<path>"
        )
    exported = exported_files(weights_dir()).get(arch, {})
    if text in exported:  # a medxfer export in the weights folder, named by its stem
        return exported[text][0]
    if (sources or exported) and os.sep not in text and not path.suffix:
        known = ", ".join([*sources, *exported])
        raise UnknownNameError(f"{arch} has no weight source {text!r}; known: {known}")
    raise FileNotFoundError(f"weight file {path} does not exist")


def weights_chain(
    name: str, pretrained: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Where the weights chosen by ``(name, pretrained)`` come from, oldest first: a medxfer
    export's recorded chain (:mod:`.exported`); for a named source with a recorded parent
    (``resnet50.imagenet-chexpert``: ``resnet50.supervised`` -> CheXpert) the parent, then the
    source with its training data; else one entry naming the source, the file or random init.
    What a task records (``weights_chain``) and ``medxfer export`` extends."""
    arch, pretrained = _split_name(name, pretrained)
    if pretrained is None:
        return [{"start": "random init", "architecture": arch}]
    text = str(pretrained)
    sources = {} if arch.startswith("timm/") else BACKBONES.entry(arch).metadata["sources"]
    if text in sources:
        src = sources[text]
        if not src.parent:
            return [{"start": f"{arch}.{text}", "file": src.filename}]
        trained = {"source": f"{arch}.{text}", "file": src.filename}
        return [{"start": src.parent}, {**trained, "trained_on": {"name": src.data or text}}]
    path = resolve_weights(arch, pretrained)
    meta = read_export_metadata(path)
    if meta is not None:
        return list(meta.get("chain") or [])
    return [{"start": str(path), "architecture": arch}]


def create_backbone(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    in_chans: int = 3,
    allow_unexpected: bool = False,
    **kw: Any,
) -> nn.Module:
    """Build a registered backbone, optionally loading pre-trained weights strictly.

    Args:
        name: ``arch``, ``arch.source`` or ``timm/<timm name>``.
        pretrained: None (random init), a source name of ``arch``, or a local weight file.
        in_chans: input channels; pre-trained RGB kernels are summed for 1-channel input.
        allow_unexpected: load a weight file that holds tensors inside the backbone's modules
            it has no place for (another architecture's), with a warning, instead of raising
            :class:`~medxfer.backbones.weights.WeightsError`.
        **kw: passed to the factory (timm arguments: ``drop_path_rate``, ``global_pool``...).
            ``num_classes`` defaults to 0, so the module returns pooled features.

    Returns:
        The module, with ``load_report`` (a :class:`LoadReport` or None) and ``medxfer_name``.
        Without ``pretrained`` the log says, once per architecture and process, that the
        backbone starts from random weights (:func:`_note_random_init`).

    Example:
        >>> m = create_backbone("timm/resnet18", in_chans=1)
        >>> m(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 512])
    """
    arch, pretrained = _split_name(name, pretrained)
    factory = _timm_factory(arch[5:]) if arch.startswith("timm/") else BACKBONES.get(arch)
    kw.setdefault("num_classes", 0)
    model = factory(in_chans=in_chans, **kw)
    model.load_report = None
    if pretrained is not None:
        from .weights import load_backbone_weights

        model.load_report = load_backbone_weights(
            model, resolve_weights(arch, pretrained), allow_unexpected=allow_unexpected
        )
    else:
        _note_random_init(arch)
    model.medxfer_name = arch
    return model


@functools.cache
def _note_random_init(arch: str) -> None:
    """Say, once per architecture and process, that a backbone starts from random weights.

    A study that meant to fine-tune pre-trained weights and forgot to name them trains from
    scratch with nothing else telling it apart; the notice names the backbone and how to load
    weights. INFO (shown by every ``medxfer`` command unless ``--quiet``), not a warning: a
    from-scratch baseline is a legitimate arm of a transfer study, and a task restored from a
    checkpoint builds its backbone this way before the checkpoint's weights replace these.
    """
    log.info(
        "backbone %s starts from random weights (pretrained not set): trained from scratch "
        "unless a checkpoint is loaded into it; `medxfer list backbones` names weight sources",
        arch,
    )


# --------------------------------------------------------------------------- input normalisation
#: Random initialisation: inputs scaled to [-1, 1], as BiT and Mustafa et al. (2021) do.
_RANDOM_INIT_NORM = (0.5, 0.5, 0.5)
#: Key of a task's ``hyper_parameters`` holding the normalisation it was trained with.
INPUT_NORM_KEY = "input_norm"


def input_config(name: str, pretrained: str | os.PathLike[str] | None = None) -> InputConfig:
    """How the weights chosen by ``(name, pretrained)`` expect their inputs.

    Reads metadata only: a named weight file need not be present yet. The arguments are those of
    :func:`create_backbone`, and the rules follow what it would load:

    1. No weights (``pretrained`` None and no ``.source`` in ``name``; ``timm/<model>`` without
       ``pretrained`` too): random init, mean = std = 0.5 (the [-1, 1] scaling of BiT and
       Mustafa et al. 2021, medxfer's historic default), ``input_size`` None.
    2. A named source (``bit-r50x1.bit-m``, or ``resnet50`` with ``pretrained="moco-v2"``): that
       :class:`WeightSource`'s mean, std and input size.
    3. ``timm/<model>`` with ``pretrained="timm"``: timm's pretrained cfg of ``<model>`` (its
       default tag unless the name gives one), read offline.
    4. A local file for a registered architecture: a Lightning checkpoint (``.ckpt``) whose
       ``hyper_parameters`` hold ``input_norm`` (``{"mean": [...], "std": [...]}``, optionally
       ``"input_size"``) gives that; otherwise the normalisation all the architecture's sources
       share; if they disagree, the first source's, and the origin says so.
    5. A local file for ``timm/<model>``: the checkpoint's ``input_norm`` first, else rule 3.

    Args:
        name: ``arch``, ``arch.source`` or ``timm/<timm name>``.
        pretrained: None, a source name of ``arch``, ``"timm"`` (timm models), or a local file.

    Raises:
        KeyError: unknown architecture or source (as :func:`create_backbone`).
        ValueError: ``name`` and ``pretrained`` name different sources; an unknown timm model; a
            checkpoint's ``input_norm`` is malformed (the message names the file).
        FileNotFoundError: a local file that does not exist.

    Example:
        >>> input_config("bit-r50x1.bit-m").mean
        (0.5, 0.5, 0.5)
        >>> input_config("resnet50", "moco-v2").origin
        'weight source resnet50.moco-v2'
    """
    arch, pretrained = _split_name(name, pretrained)
    # both look-ups validate the name, as create_backbone would, without building anything
    timm_cfg = _timm_input_config(arch[5:]) if arch.startswith("timm/") else None
    sources: dict[str, WeightSource] = (
        {} if timm_cfg is not None else BACKBONES.entry(arch).metadata["sources"]
    )
    if pretrained is None:
        return InputConfig(
            _RANDOM_INIT_NORM,
            _RANDOM_INIT_NORM,
            None,
            f"no pre-trained weights ({arch}, random init): BiT's [-1, 1]",
        )
    text = str(pretrained)
    if timm_cfg is not None and text == "timm":
        return timm_cfg
    if text in sources:
        return _source_input_config(sources[text], f"weight source {arch}.{text}")
    path = resolve_weights(arch, pretrained)
    found = _checkpoint_input_config(path)
    if found is not None:
        return found
    if timm_cfg is not None:
        return replace(timm_cfg, origin=f"{timm_cfg.origin} (local file {path})")
    if not sources:
        log.warning("%s declares no weight sources; assuming [-1, 1] inputs for %s", arch, path)
        return InputConfig(
            _RANDOM_INIT_NORM,
            _RANDOM_INIT_NORM,
            None,
            f"{arch} declares no normalisation (local file {path}): BiT's [-1, 1]",
        )
    first_key, first = next(iter(sources.items()))
    if all((s.mean, s.std) == (first.mean, first.std) for s in sources.values()):
        sizes = {s.input_size for s in sources.values()}
        return InputConfig(
            first.mean,
            first.std,
            first.input_size if len(sizes) == 1 else None,
            f"the {arch} sources' normalisation (local file {path})",
        )
    return _source_input_config(
        first,
        f"the first {arch} source ({first_key}), as its sources disagree (local file {path})",
    )


def _source_input_config(source: WeightSource, origin: str) -> InputConfig:
    return InputConfig(source.mean, source.std, source.input_size, origin)


def _timm_input_config(model: str) -> InputConfig:
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError as err:  # a known architecture with an unknown pretrained tag
        raise ConfigError(f"timm model {model!r}: {err}") from None
    if cfg is None:
        raise ConfigError(f"timm has no model {model!r} (see timm.list_models())")
    return InputConfig(
        tuple(cfg.mean),
        tuple(cfg.std),
        tuple(cfg.input_size) if cfg.input_size else None,
        f"timm pretrained_cfg of {cfg.architecture}.{cfg.tag}",
    )


def _checkpoint_input_config(path: Path) -> InputConfig | None:
    """The ``input_norm`` a medxfer task saved in a Lightning checkpoint, or that a medxfer
    export records (:mod:`.exported`), or None."""
    from .weights import read_checkpoint_hparams

    exported = read_export_metadata(path)
    if exported is not None:
        norm, what = exported.get("input_norm"), f"export {path} (trained with it)"
    else:
        norm, what = (read_checkpoint_hparams(path) or {}).get(INPUT_NORM_KEY), None
    if norm is None:
        return None

    def triple(key: str, kind: type) -> tuple[Any, ...] | None:
        value = norm.get(key) if isinstance(norm, Mapping) else None
        if value is None and key == "input_size":
            return None
        try:
            out = tuple(kind(v) for v in value)
        except (TypeError, ValueError):
            out = ()
        if len(out) != 3:
            raise ValueError(
                f"{path}: hyper_parameters[{INPUT_NORM_KEY!r}][{key!r}] must hold 3 numbers, "
                f"got {value!r}"
            )
        return out

    return InputConfig(
        triple("mean", float),
        triple("std", float),
        triple("input_size", int),
        what or f"checkpoint {path} (trained with it)",
    )


# ------------------------------------------------------------------------------ built-in entries
_BIT_URL = "https://storage.googleapis.com/bit_models/{}"
_BIT_LICENCE = "Apache-2.0"
_BIT_NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_BIT_VARIANTS = {
    "r50x1": "50x1",
    "r50x3": "50x3",
    "r101x1": "101x1",
    "r101x3": "101x3",
    "r152x2": "152x2",
    "r152x4": "152x4",
}

for _arch, _size in _BIT_VARIANTS.items():
    _tag = "R" + _size
    register_backbone(
        f"bit-{_arch}",
        description=f"BiT ResNet-v2 {_tag} (GroupNorm + weight standardisation), timm resnetv2_{_size}_bit",
        sources={
            "bit-s": WeightSource(
                f"BiT-S-{_tag}.npz",
                _BIT_URL.format(f"BiT-S-{_tag}.npz"),
                "BiT-S: supervised on ImageNet-1k",
                _BIT_LICENCE,
                **_BIT_NORM,
            ),
            "bit-m": WeightSource(
                f"BiT-M-{_tag}.npz",
                _BIT_URL.format(f"BiT-M-{_tag}.npz"),
                "BiT-M: supervised on ImageNet-21k",
                _BIT_LICENCE,
                **_BIT_NORM,
            ),
        },
    )(_timm_factory(f"resnetv2_{_size}_bit"))

register_backbone(
    "resnet50v2-bn",
    description="ResNet50-v2 with BatchNorm: the paper's non-BiT baseline, timm resnetv2_50",
    sources={
        "in1k": WeightSource(
            "resnetv2_50.a1h_in1k.safetensors",
            "https://huggingface.co/timm/resnetv2_50.a1h_in1k (model.safetensors, renamed)",
            "supervised on ImageNet-1k (timm a1h recipe)",
            "Apache-2.0",
            # timm's pretrained_cfg of resnetv2_50.a1h_in1k: inputs in [-1, 1], not ImageNet's
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
    },
)(_timm_factory("resnetv2_50"))

_FB = "https://dl.fbaipublicfiles.com"
_FB_NC = "CC-BY-NC-4.0"
_PYCONTRAST = "https://www.dropbox.com/sh/87d24jqsl6ra7t2"  # HobbitLong/PyContrast MODEL_ZOO.md
_PCL = "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint"
_NEWT = "https://cornell.box.com/s/bnyhq5lwobu6fgjrub44zle0pyjijbmw (visipedia/newt)"
_BENCH = "https://zenodo.org/record/5205234/files"  # Hosseinzadeh Taher et al., DART 2021
_BENCH_LICENCE = "ASU non-commercial research licence (LICENSE of MR-HosseinzadehTaher/BenchmarkTransferLearning)"
#: Layouts, as the releases hold them (the loader finds the wrapper and the prefix).
_PYCONTRAST_LAYOUT = (
    "{'model': module.encoder.* + module.head.* (projection)%s, 'model_ema': encoder.* + "
    "head.* (the momentum encoder, where one was trained), 'contrast': the memory bank or "
    "queue, 'optimizer', 'epoch'}"
)
_MOCO_LAYOUT = (
    "{'state_dict': module.encoder_q.* (fc: the MLP head) + module.encoder_k.* (momentum "
    "encoder) + module.queue, module.queue_ptr%s, 'optimizer', 'epoch', 'arch'}"
)
_DEEPCLUSTER_LAYOUT = (
    "bare module.* (torchvision keys) + module.projection_head.* + module.prototypes*"
)
_BENCH_LAYOUT = (
    "{'state_dict': %(p)s* (torchvision keys%(dp)s) + %(p)sfc.0.* (the %(n)s-label head before "
    "its Sigmoid), 'optimizer', 'scheduler', 'epoch', 'lossMIN'}"
)
#: The CheXpert models were saved from DataParallel (``module.``); the ChestX-ray14 ones without.
_DP = {"p": "module.", "dp": ", DataParallel"}
_BARE = {"p": "", "dp": ", no prefix"}
_IMAGENET_PARENT = "resnet50.supervised"
_SIMCLR_NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
_CONVERTED = "safetensors, torchvision keys (written by medxfer convert %s from the release: %s)"

register_backbone(
    "resnet50",
    description="ResNet-50, torchvision layout: the benchmark's supervised, self-supervised and medical checkpoints",
    sources={
        # ---------------------------------------------------------------- supervised
        "supervised": WeightSource(
            "resnet50-0676ba61.pth",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            "supervised on ImageNet-1k (torchvision V1)",
            "BSD-3-Clause",
            layout="bare torchvision state dict, fc.* = the 1000-class head",
            data="ImageNet-1k",
        ),
        "inat2021": WeightSource(
            "inat2021_supervised_large.pth.tar",
            _NEWT,
            "supervised on iNat2021 (10,000 species), from ImageNet (Van Horn et al., CVPR 2021)",
            "MIT (visipedia/newt)",
            layout="{'state_dict': torchvision keys + fc.* (10,000-class head)}",
            parent=_IMAGENET_PARENT,
            data="iNat2021",
        ),
        "inat2021-mini": WeightSource(
            "inat2021_supervised_mini.pth.tar",
            _NEWT,
            "supervised on iNat2021-mini (10,000 species), from ImageNet",
            "MIT (visipedia/newt)",
            layout="{'state_dict': torchvision keys + fc.* (10,000-class head)}",
            parent=_IMAGENET_PARENT,
            data="iNat2021-mini",
        ),
        # ------------------------------------------------ contrastive instance discrimination
        "insdis": WeightSource(
            "InsDis.pth",
            f"{_PYCONTRAST}/AACcsSIt1_Njv7GsmsuzZ6Sta/InsDis.pth",
            "InsDis (instance discrimination, memory bank), 200 epochs, ImageNet-1k",
            "BSD-2-Clause (HobbitLong/PyContrast)",
            method=CONTRASTIVE,
            layout=_PYCONTRAST_LAYOUT % "",
        ),
        "pirl": WeightSource(
            "PIRL.pth",
            f"{_PYCONTRAST}/AADN4jKnvTI0U5oT6hTmQZz8a/PIRL.pth",
            "PIRL (jigsaw-invariant contrastive), 200 epochs, ImageNet-1k",
            "BSD-2-Clause (HobbitLong/PyContrast)",
            method=CONTRASTIVE,
            layout=_PYCONTRAST_LAYOUT % " + module.head_jig.* (jigsaw head)",
        ),
        "infomin": WeightSource(
            "InfoMin_800.pth",
            f"{_PYCONTRAST}/AAAzMTynP3Qc8mIE4XWkgILUa/InfoMin_800.pth",
            "InfoMin Aug., 800 epochs, ImageNet-1k",
            "BSD-2-Clause (HobbitLong/PyContrast)",
            method=CONTRASTIVE,
            layout=_PYCONTRAST_LAYOUT % "",
        ),
        "moco-v1": WeightSource(
            "moco_v1_200ep_pretrain.pth.tar",
            f"{_FB}/moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar",
            "MoCo v1, 200 epochs, ImageNet-1k",
            _FB_NC,
            method=CONTRASTIVE,
            layout=_MOCO_LAYOUT % "",
        ),
        "moco-v2": WeightSource(
            "moco_v2_800ep_pretrain.pth.tar",
            f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
            "MoCo v2, 800 epochs, ImageNet-1k",
            _FB_NC,
            method=CONTRASTIVE,
            layout=_MOCO_LAYOUT % "",
        ),
        "pcl-v1": WeightSource(
            "PCL_v1_epoch200.pth.tar",
            f"{_PCL}/PCL_v1_epoch200.pth.tar",
            "PCL v1 (prototypical contrastive), 200 epochs, ImageNet-1k",
            "MIT (salesforce/PCL)",
            method=CONTRASTIVE,
            layout=_MOCO_LAYOUT % "",
        ),
        "pcl-v2": WeightSource(
            "PCL_v2_epoch200.pth.tar",
            f"{_PCL}/PCL_v2_epoch200.pth.tar",
            "PCL v2 (prototypical contrastive), 200 epochs, ImageNet-1k",
            "MIT (salesforce/PCL)",
            method=CONTRASTIVE,
            layout=_MOCO_LAYOUT % "",
        ),
        "simclr-v1": WeightSource(
            "simclr_v1_resnet50_1x.safetensors",
            "https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip "
            "(TensorFlow checkpoint ResNet50_1x/model.ckpt-225206)",
            "SimCLR v1, ResNet-50 1x, ImageNet-1k",
            "Apache-2.0",
            # trained on unnormalised [0, 1] inputs (the TF release; tonylins/simclr-converter
            # and the ssl-transfer benchmark feed it without mean / std)
            **_SIMCLR_NORM,
            method=CONTRASTIVE,
            layout=_CONVERTED % ("simclr", "TF names base_model/conv2d_N/kernel, ..."),
            convert="simclr",
        ),
        "simclr-v2": WeightSource(
            "simclr_v2_r50_1x_sk0.safetensors",
            "gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0 (TensorFlow checkpoint "
            "model.ckpt-250228)",
            "SimCLR v2, ResNet-50 1x without selective kernels, 800 epochs, ImageNet-1k",
            "Apache-2.0",
            **_SIMCLR_NORM,
            method=CONTRASTIVE,
            layout=_CONVERTED % ("simclr", "TF names base_model/conv2d_N/kernel, ..."),
            convert="simclr",
        ),
        # ------------------------------------------------------------------------ clustering
        "swav": WeightSource(
            "swav_800ep_pretrain.pth.tar",
            f"{_FB}/deepcluster/swav_800ep_pretrain.pth.tar",
            "SwAV, 800 epochs, ImageNet-1k",
            _FB_NC,
            method=CLUSTERING,
            layout=_DEEPCLUSTER_LAYOUT,
        ),
        "deepcluster-v2": WeightSource(
            "deepclusterv2_800ep_pretrain.pth.tar",
            f"{_FB}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar",
            "DeepCluster-v2, 800 epochs, ImageNet-1k",
            _FB_NC,
            method=CLUSTERING,
            layout=_DEEPCLUSTER_LAYOUT,
        ),
        "sela-v2": WeightSource(
            "selav2_400ep_pretrain.pth.tar",
            f"{_FB}/deepcluster/selav2_400ep_pretrain.pth.tar",
            "SeLa-v2, 400 epochs, ImageNet-1k",
            _FB_NC,
            method=CLUSTERING,
            layout=_DEEPCLUSTER_LAYOUT,
        ),
        # ---------------------------------------------------- redundancy reduction / distillation
        "barlow-twins": WeightSource(
            "barlowtwins-resnet50.pth",
            f"{_FB}/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth (rename)",
            "Barlow Twins, 1000 epochs, ImageNet-1k",
            "MIT",
            method=REDUNDANCY,
            layout="bare torchvision state dict without fc",
        ),
        "byol": WeightSource(
            "byol_pretrain_res50x1.safetensors",
            "https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl",
            "BYOL, 1000 epochs, ImageNet-1k",
            "Apache-2.0",
            method=REDUNDANCY,
            layout=_CONVERTED
            % ("byol", "a pickled Haiku experiment state, online_params / online_state"),
            convert="byol",
        ),
        "dino": WeightSource(
            "dino_resnet50_pretrain.pth",
            f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
            "DINO, ImageNet-1k",
            "Apache-2.0",
            method=REDUNDANCY,
            layout="bare torchvision state dict without fc (the teacher's backbone)",
        ),
        # ---------------------------------------------- in-domain / domain-adaptive medical
        "chexpert": WeightSource(
            "chexpert.pth.tar",
            f"{_BENCH}/chexpert.pth.tar",
            "supervised on CheXpert (14 labels) from random init (Hosseinzadeh Taher et al., DART 2021)",
            _BENCH_LICENCE,
            method=MEDICAL,
            layout=_BENCH_LAYOUT % {**_DP, "n": "14"},
            parent="random init",
            data="CheXpert",
        ),
        "chestxray14": WeightSource(
            "chestxray14.pth.tar",
            f"{_BENCH}/chestxray14.pth.tar",
            "supervised on NIH ChestX-ray14 (14 labels) from random init (DART 2021)",
            _BENCH_LICENCE,
            method=MEDICAL,
            layout=_BENCH_LAYOUT % {**_BARE, "n": "14"},
            parent="random init",
            data="ChestX-ray14",
        ),
        "imagenet-chexpert": WeightSource(
            "ImageNet_chexpert.pth.tar",
            f"{_BENCH}/ImageNet_chexpert.pth.tar",
            "domain-adapted: supervised ImageNet, then supervised CheXpert (DART 2021)",
            _BENCH_LICENCE,
            method=MEDICAL,
            layout=_BENCH_LAYOUT % {**_DP, "n": "14"},
            parent=_IMAGENET_PARENT,
            data="CheXpert",
        ),
        "imagenet-chestxray14": WeightSource(
            "ImageNet_chestxray14.pth.tar",
            f"{_BENCH}/ImageNet_chestxray14.pth.tar",
            "domain-adapted: supervised ImageNet, then supervised ChestX-ray14 (DART 2021)",
            _BENCH_LICENCE,
            method=MEDICAL,
            layout=_BENCH_LAYOUT % {**_BARE, "n": "14"},
            parent=_IMAGENET_PARENT,
            data="ChestX-ray14",
        ),
        "imagenet-mimic": WeightSource(
            "domain_adapted_resnet50_imagenet_mimic_checkpoint.pth.tar",
            "https://zenodo.org/records/17627332/files/"
            "domain_adapted_resnet50_imagenet_mimic_checkpoint.pth.tar",
            "domain-adapted: supervised ImageNet, then supervised MIMIC-CXR (Hosseinzadeh Taher "
            "et al., MedIA 2025)",
            _BENCH_LICENCE,
            method=MEDICAL,
            layout=_BENCH_LAYOUT % {**_DP, "n": "N"},
            parent=_IMAGENET_PARENT,
            data="MIMIC-CXR",
        ),
    },
)(_timm_factory("resnet50"))
