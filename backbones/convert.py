"""Converters of the ResNet-50 releases that are not PyTorch files into torchvision-layout
``.safetensors`` (``medxfer convert byol|simclr IN OUT``), which then load as the named sources
``resnet50.byol``, ``resnet50.simclr-v1`` and ``resnet50.simclr-v2``.

* **BYOL** (Grill et al., NeurIPS 2020; github deepmind/byol, ``pretrain_res50x1.pkl``): a
  pickled dict whose ``experiment_state`` is the NamedTuple ``_ByolExperimentState(online_params,
  target_params, online_state, target_state, opt_state)`` of Haiku dicts of numpy arrays. The
  online encoder's parameters are named ``<net>/~/initial_conv`` (``w``: an HWIO kernel),
  ``<net>/~/initial_batchnorm`` (``scale``, ``offset``: shape ``(1, 1, 1, C)``) and
  ``<net>/~/block_group_G/~/block_B/~/{conv_K, batchnorm_K, shortcut_conv,
  shortcut_batchnorm}``; the batch-norm statistics are the state's ``<bn>/~/mean_ema`` and
  ``<bn>/~/var_ema`` (``average``). The file is read by
  :class:`medxfer.safe_pickle.RestrictedUnpickler`: Haiku's immutable dict becomes a ``dict``,
  the NamedTuples tuples of their fields; nothing from BYOL, Haiku, JAX or optax is imported or
  run. Kernels become OIHW, the projector, predictor, classifier, target network, EMA counters
  and optimizer state are dropped and listed (the ssl-transfer benchmark, Ericsson et al. 2021,
  pairs the modules by their order; this pairs them by name).
* **SimCLR v1 / v2** (Chen et al., ICML 2020 / NeurIPS 2020; github google-research/simclr):
  TensorFlow checkpoints (a tensor bundle: an SSTable index and data shards) whose encoder
  variables are ``base_model/conv2d[_N]/kernel`` and ``base_model/batch_normalization[_N]/{gamma,
  beta, moving_mean, moving_variance}``, numbered in creation order: the stem, then per
  bottleneck block the projection shortcut first (where there is one), then its three
  convolutions, each followed by its batch norm (so a convolution and its batch norm share their
  number, as tonylins/simclr-converter and Separius/SimCLRv2-Pytorch rely on). The optimizer's
  ``/Momentum`` slots, ``ema_model/``, ``head_supervised/``, ``head_contrastive/`` and
  ``global_step`` are dropped and listed. Reading the bundle needs TensorFlow's reader
  (``tf.train.load_checkpoint``); a ``.npz`` holding the same variable names is read with
  numpy instead (``allow_pickle=False``). The stages are found from the kernels' shapes (a
  block whose first two kernels are both 1x1 and read the same input opens with a projection,
  and so opens a stage), so ResNet-50's ``(3, 4, 6, 3)`` is not assumed.

Why by hand: no library maps either release to torchvision's names without running the
release's own code (``pickle.load`` of the BYOL file imports and runs what it names).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.errors import ConfigError, WeightsError
from medxfer.safe_pickle import PickledRecord, RestrictedUnpickler, numpy_globals

__all__ = [
    "CONVERTERS",
    "ConvertReport",
    "byol_to_torchvision",
    "convert_release",
    "read_byol_checkpoint",
    "read_tf_checkpoint",
    "simclr_to_torchvision",
]

#: The metadata key of a converted file (what it was converted from).
CONVERTED_KEY = "medxfer_converted_from"
#: The TensorFlow scope of SimCLR's encoder.
SIMCLR_PREFIX = "base_model/"
#: How to install the reader of TensorFlow checkpoints.
TENSORFLOW_HINT = "pip install tensorflow-cpu"


@dataclass
class ConvertReport:
    """What a conversion wrote and left out.

    Attributes:
        source: the release file read.
        out: the ``.safetensors`` file written.
        tensors: how many tensors were written.
        dropped: the release's modules / variables not written (heads, target network,
            optimizer state...).
    """

    source: str
    out: str
    tensors: int = 0
    dropped: list[str] = field(default_factory=list)


def _torch_bn(conv: str) -> str:
    """The batch norm that follows a torchvision convolution: ``conv1`` -> ``bn1``,
    ``layer1.0.conv2`` -> ``layer1.0.bn2``, ``...downsample.0`` -> ``...downsample.1``."""
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    head, _, last = conv.rpartition(".")
    return f"{head}.bn{last[4:]}" if head else f"bn{last[4:]}"


# -------------------------------------------------------------------------------------- BYOL
def _byol_globals() -> dict[tuple[str, str], Any]:
    """Numpy's globals; Haiku's immutable dicts as ``dict``; a JAX array as a numpy array."""
    allowed: dict[tuple[str, str], Any] = dict(numpy_globals())
    for name in ("frozendict", "FlatMapping"):
        allowed["haiku._src.data_structures", name] = dict
    for module in ("jax.numpy.lax_numpy", "jax._src.numpy.lax_numpy"):
        allowed[module, "array"] = np.asarray
    allowed["collections", "OrderedDict"] = dict
    return allowed


def read_byol_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The online network's ``(params, state)`` of a BYOL release pickle, read without running
    anything it names.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a pickle, a global outside the allowed ones, or no
            ``experiment_state`` with online parameters and state; naming the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BYOL checkpoint {path} does not exist")
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(
                f,  # type: ignore[arg-type]
                str(path),
                _byol_globals(),
                records=("byol.", "optax.", "haiku."),
                error=WeightsError,
                what="a BYOL checkpoint holds numpy arrays, Haiku dicts and NamedTuples of "
                "training state",
                encoding="latin1",
            ).load()
    except WeightsError:
        raise
    except Exception as err:  # any unpickling failure: not a BYOL pickle
        raise WeightsError(
            f"{path}: not a readable BYOL checkpoint pickle ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(obj, dict) or "experiment_state" not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path}: no key 'experiment_state' in the BYOL checkpoint ({keys})")
    state = obj["experiment_state"]
    if isinstance(state, Mapping):
        params, bn_state = state.get("online_params"), state.get("online_state")
    elif isinstance(state, PickledRecord | tuple) and len(state) >= 3:
        params, bn_state = state[0], state[2]  # _ByolExperimentState's field order
    else:
        params = bn_state = None
    if not isinstance(params, Mapping) or not isinstance(bn_state, Mapping):
        raise WeightsError(
            f"{path}: 'experiment_state' holds no online_params / online_state mappings "
            f"(found {type(state).__name__})"
        )
    return params, bn_state


def byol_to_torchvision(
    params: Mapping[str, Mapping[str, np.ndarray]],
    state: Mapping[str, Mapping[str, np.ndarray]],
    source: str = "BYOL checkpoint",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map BYOL's online Haiku ResNet onto torchvision ResNet names.

    Args:
        params: ``online_params``: module name -> {parameter name: array}.
        state: ``online_state``: module name -> {``average``, ...} (batch-norm EMAs).
        source: the file, for errors.

    Returns:
        ``(state_dict, dropped)``: torchvision key -> array (kernels OIHW, batch-norm vectors
        flat), and the modules of ``params`` and ``state`` left out, sorted.

    Raises:
        WeightsError: no ``<net>/~/initial_conv``, or a module / parameter the layout needs is
            missing or misshaped; naming it.
    """
    roots = sorted(k[: -len("/~/initial_conv")] for k in params if k.endswith("/~/initial_conv"))
    if len(roots) != 1:
        raise WeightsError(
            f"{source}: expected one Haiku ResNet in online_params (a module "
            f"'<net>/~/initial_conv'), found {len(roots)}: modules {sorted(params)[:5]}"
        )
    root = roots[0]
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(table: Mapping[str, Mapping[str, np.ndarray]], module: str, key: str) -> np.ndarray:
        entry = table.get(module)
        if not isinstance(entry, Mapping) or key not in entry:
            raise WeightsError(f"{source}: missing {key!r} of module {module!r}")
        used.add(module)
        return np.asarray(entry[key], dtype=np.float32)

    def conv(module: str, name: str) -> None:
        kernel = take(params, f"{root}/~/{module}", "w")
        if kernel.ndim != 4:
            raise WeightsError(
                f"{source}: {root}/~/{module} 'w' has shape {kernel.shape}, not a 2-d kernel"
            )
        out[f"{name}.weight"] = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        bn = _torch_bn(name)
        full = f"{root}/~/{module.replace('conv', 'batchnorm')}"
        out[f"{bn}.weight"] = take(params, full, "scale").reshape(-1)
        out[f"{bn}.bias"] = take(params, full, "offset").reshape(-1)
        out[f"{bn}.running_mean"] = take(state, f"{full}/~/mean_ema", "average").reshape(-1)
        out[f"{bn}.running_var"] = take(state, f"{full}/~/var_ema", "average").reshape(-1)

    conv("initial_conv", "conv1")
    group = 0
    while f"{root}/~/block_group_{group}/~/block_0/~/conv_0" in params:
        block = 0
        while f"{root}/~/block_group_{group}/~/block_{block}/~/conv_0" in params:
            haiku, torch_name = f"block_group_{group}/~/block_{block}", f"layer{group + 1}.{block}"
            for k in range(3):
                conv(f"{haiku}/~/conv_{k}", f"{torch_name}.conv{k + 1}")
            if f"{root}/~/{haiku}/~/shortcut_conv" in params:
                conv(f"{haiku}/~/shortcut_conv", f"{torch_name}.downsample.0")
            block += 1
        group += 1
    if group == 0:
        raise WeightsError(f"{source}: missing module '{root}/~/block_group_0/~/block_0/~/conv_0'")
    dropped = sorted({*params, *state} - used)
    return out, dropped


# ------------------------------------------------------------------------------------ SimCLR
_CONV = re.compile(r"conv2d(?:_(\d+))?/kernel")
_BN = re.compile(r"batch_normalization(?:_(\d+))?/(gamma|beta|moving_mean|moving_variance)")
_BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean"}
_BN_FIELDS["moving_variance"] = "running_var"


def _simclr_names(kernels: list[np.ndarray], source: str) -> list[str]:
    """torchvision names of SimCLR's convolutions in creation order, stages found from the
    kernels' shapes (HWIO): a block opens with a projection (and a stage) when its first two
    kernels are 1x1 and read the same number of channels."""
    names = ["conv1"]
    i, stage, block = 1, 0, 0
    while i < len(kernels):
        a = kernels[i]
        b = kernels[i + 1] if i + 1 < len(kernels) else None
        projection = (
            b is not None and a.shape[:2] == (1, 1) == b.shape[:2] and a.shape[2] == b.shape[2]
        )
        if projection:
            stage, block = stage + 1, 0
        elif stage == 0:
            raise WeightsError(
                f"{source}: conv2d_{i} does not open a bottleneck block with a projection "
                "shortcut: not a SimCLR ResNet"
            )
        prefix = f"layer{stage}.{block}"
        units = ["downsample.0"] if projection else []
        names += [f"{prefix}.{u}" for u in [*units, "conv1", "conv2", "conv3"]]
        i += len(units) + 3
        block += 1
    if len(names) != len(kernels):
        raise WeightsError(
            f"{source}: {len(kernels)} convolutions do not end on a whole bottleneck block"
        )
    return names


def simclr_to_torchvision(
    arrays: Mapping[str, np.ndarray], source: str = "SimCLR checkpoint"
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map SimCLR's TensorFlow encoder variables (``base_model/conv2d_N/kernel``, ...) onto
    torchvision ResNet names.

    Args:
        arrays: variable name -> array, as in the checkpoint.
        source: the file, for errors.

    Returns:
        ``(state_dict, dropped)``: torchvision key -> array (kernels OIHW), and the variables
        left out (optimizer slots, EMA copy, heads, ``global_step``), sorted.

    Raises:
        WeightsError: no encoder variables, or a convolution / batch-norm variable missing or
            misshaped; naming it.
    """
    convs: dict[int, str] = {}
    bns: dict[int, dict[str, str]] = {}
    dropped = []
    for key in arrays:
        local = key[len(SIMCLR_PREFIX) :] if key.startswith(SIMCLR_PREFIX) else None
        conv = _CONV.fullmatch(local) if local is not None else None
        bn = _BN.fullmatch(local) if local is not None else None
        if conv is not None:
            convs[int(conv.group(1) or 0)] = key
        elif bn is not None:
            bns.setdefault(int(bn.group(1) or 0), {})[bn.group(2)] = key
        else:
            dropped.append(key)
    if not convs:
        raise WeightsError(
            f"{source}: no variable {SIMCLR_PREFIX}conv2d/kernel (not a SimCLR checkpoint; "
            f"variables: {sorted(arrays)[:5]})"
        )
    kernels = []
    for i in range(max(convs) + 1):
        if i not in convs:
            raise WeightsError(f"{source}: missing variable {SIMCLR_PREFIX}conv2d_{i}/kernel")
        kernels.append(np.asarray(arrays[convs[i]], dtype=np.float32))
        if kernels[-1].ndim != 4:
            raise WeightsError(f"{source}: {convs[i]} has shape {kernels[-1].shape}, not HWIO")
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(_simclr_names(kernels, source)):
        out[f"{name}.weight"] = kernels[i].transpose(3, 2, 0, 1)
        bn_name = "batch_normalization" + (f"_{i}" if i else "")
        for tf_field, torch_field in _BN_FIELDS.items():
            key = bns.get(i, {}).get(tf_field)
            if key is None:
                raise WeightsError(
                    f"{source}: missing variable {SIMCLR_PREFIX}{bn_name}/{tf_field}"
                )
            value = np.asarray(arrays[key], dtype=np.float32).reshape(-1)
            if value.shape[0] != kernels[i].shape[3]:
                raise WeightsError(
                    f"{source}: {key} has {value.shape[0]} values for the "
                    f"{kernels[i].shape[3]} channels of {convs[i]}"
                )
            out[f"{_torch_bn(name)}.{torch_field}"] = value
    extra = sorted(set(bns) - set(range(len(kernels))))
    if extra:
        raise WeightsError(
            f"{source}: batch norm {SIMCLR_PREFIX}batch_normalization_{extra[0]} has no "
            "convolution before it"
        )
    return out, sorted(dropped)


def read_tf_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The variables of a TensorFlow checkpoint (its prefix, ``model.ckpt-225206``, or its
    ``.index`` file), or of a ``.npz`` holding arrays under the same names.

    Raises:
        FileNotFoundError: neither the path nor ``<path>.index`` exists.
        ConfigError: a TensorFlow checkpoint and no TensorFlow installed (says how to install
            it).
        WeightsError: the file is not a readable checkpoint / ``.npz``.
    """
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"SimCLR checkpoint {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as err:
            raise WeightsError(f"{path}: not a readable .npz ({err})") from None
    prefix = path.with_suffix("") if path.suffix == ".index" else path
    if not Path(f"{prefix}.index").is_file():
        raise FileNotFoundError(
            f"TensorFlow checkpoint {prefix} not found: give its prefix (the name before "
            "'.index' and '.data-00000-of-00001', e.g. ResNet50_1x/model.ckpt-225206)"
        )
    try:
        import tensorflow as tf
    except ImportError:
        raise ConfigError(
            f"reading the TensorFlow checkpoint {prefix} needs TensorFlow: {TENSORFLOW_HINT}"
        ) from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    except Exception as err:  # TensorFlow's own errors (DataLossError, NotFoundError...)
        raise WeightsError(f"{prefix}: not a readable TensorFlow checkpoint ({err})") from None


# ---------------------------------------------------------------------------------- writing
#: ``medxfer convert`` subcommand -> what it reads. A source whose ``WeightSource.convert`` names
#: a subcommand is written by it.
CONVERTERS = {
    "byol": "the BYOL release pickle (pretrain_res50x1.pkl)",
    "simclr": "a SimCLR v1 / v2 TensorFlow checkpoint prefix (model.ckpt-NNN; needs "
    "tensorflow-cpu) or a .npz of its variables",
}


def convert_release(
    kind: str, source: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False
) -> ConvertReport:
    """Convert a release (``kind``: ``byol`` or ``simclr``) to a torchvision-layout
    ``.safetensors`` file, recording the source file in its metadata.

    Raises:
        ConfigError: an unknown ``kind``, or ``out`` exists and ``force`` is false.
        WeightsError: ``out`` is not a ``.safetensors`` name, or the release is not readable
            (naming the file and the key).
        FileNotFoundError: no such release file.
    """
    if kind not in CONVERTERS:
        raise ConfigError(f"unknown converter {kind!r}; known: {', '.join(CONVERTERS)}")
    source, out = Path(source), Path(out)
    if not out.name.lower().endswith(".safetensors"):
        raise WeightsError(f"{out}: the converted file is .safetensors; name it <name>.safetensors")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if kind == "byol":
        params, state = read_byol_checkpoint(source)
        tensors, dropped = byol_to_torchvision(params, state, str(source))
    else:
        tensors, dropped = simclr_to_torchvision(read_tf_checkpoint(source), str(source))
    import torch  # after reading: a bad release fails without importing torch
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    save_file(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
        str(tmp),
        metadata={CONVERTED_KEY: json.dumps({"converter": kind, "file": source.name})},
    )
    os.replace(tmp, out)
    return ConvertReport(str(source), str(out), len(tensors), dropped)
