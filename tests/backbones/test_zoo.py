"""The pre-trained ResNet-50 zoo (Ericsson et al., CVPR 2021; Hosseinzadeh Taher et al., DART
2021): every named source's metadata and published normalisation, every release's key layout
loading with every backbone tensor matched and its heads / queues / momentum encoders dropped
and listed, and the BYOL (JAX pickle) and SimCLR (TensorFlow) converters.

Layouts are written from a small stand-in with ResNet-50's key names (timm ``ResNet`` with
bottleneck blocks, 44k parameters), so every layout costs milliseconds; one test per release
family builds the real ``resnet50`` through its named source (the slow-marked ones in
``make test-all``). The release layouts follow the releases' own code: PyContrast's trainer
(``model`` / ``model_ema`` / ``contrast``), MoCo's and PCL's ``main_*.py`` (``state_dict`` with
``module.encoder_q.`` / ``module.encoder_k.`` / ``module.queue``), SwAV's ``module.`` with
``projection_head`` / ``prototypes``, the benchmark's ``engine.py`` (``state_dict``, DataParallel
``module.``, ``fc.0`` before a Sigmoid), NeWT's iNat2021 files (``state_dict``, a 10,000-class
``fc``), BYOL's Haiku module names and SimCLR's TensorFlow variable names.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from collections import namedtuple
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.resnet import Bottleneck, ResNet

from medxfer.backbones import (
    BACKBONES,
    create_backbone,
    input_config,
    load_backbone_weights,
    weights_chain,
)
from medxfer.backbones.convert import (
    CONVERTED_KEY,
    CONVERTERS,
    byol_to_torchvision,
    read_byol_checkpoint,
    read_tf_checkpoint,
    simclr_to_torchvision,
)
from medxfer.backbones.exported import describe_chain
from medxfer.backbones.sources import METHODS
from medxfer.commands import main
from medxfer.errors import ConfigError, WeightsError

SOURCES = BACKBONES.entry("resnet50").metadata["sources"]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # SimCLR: [0, 1] inputs, no mean / std
#: The normalisation each release was trained with, as its own code applies it.
PUBLISHED = {
    "supervised": IMAGENET,
    "inat2021": IMAGENET,
    "inat2021-mini": IMAGENET,
    "insdis": IMAGENET,
    "pirl": IMAGENET,
    "infomin": IMAGENET,
    "moco-v1": IMAGENET,
    "moco-v2": IMAGENET,
    "pcl-v1": IMAGENET,
    "pcl-v2": IMAGENET,
    "simclr-v1": UNIT,
    "simclr-v2": UNIT,
    "swav": IMAGENET,
    "deepcluster-v2": IMAGENET,
    "sela-v2": IMAGENET,
    "barlow-twins": IMAGENET,
    "byol": IMAGENET,
    "dino": IMAGENET,
    "chexpert": IMAGENET,  # the benchmark's default --normalization imagenet
    "chestxray14": IMAGENET,
    "imagenet-chexpert": IMAGENET,
    "imagenet-chestxray14": IMAGENET,
    "imagenet-mimic": IMAGENET,
}
STAND_IN = {"block": Bottleneck, "layers": (2, 1, 1, 1), "channels": (4, 8, 16, 32)}


def stand_in() -> torch.nn.Module:
    """A bottleneck ResNet with torchvision / timm ResNet-50 key names, 44k parameters."""
    return ResNet(**STAND_IN, stem_width=8, num_classes=0).eval()


@pytest.fixture(scope="module")
def backbone() -> dict[str, torch.Tensor]:
    """The stand-in's tensors, each made distinct (a wrong pairing changes them)."""
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(v.shape, generator=g).abs() + 0.1 if v.is_floating_point() else v + 3
        for k, v in stand_in().state_dict().items()
    }


# ------------------------------------------------------------------------------- metadata
def test_every_source_has_its_published_metadata_and_normalisation() -> None:
    assert set(SOURCES) == set(PUBLISHED)  # a new source needs its published normalisation here
    for name, src in SOURCES.items():
        assert src.filename and src.url and src.licence != "see url" and src.layout, name
        assert src.method in METHODS, name
        assert src.convert in ("", *CONVERTERS), name
        cfg = input_config("resnet50", name)
        assert (cfg.mean, cfg.std) == PUBLISHED[name], name


@pytest.mark.parametrize(
    ("source", "chain"),
    [
        pytest.param(
            "imagenet-chexpert", "resnet50.supervised -> CheXpert", id="imagenet-chexpert"
        ),
        pytest.param("imagenet-mimic", "resnet50.supervised -> MIMIC-CXR", id="imagenet-mimic"),
        pytest.param("chestxray14", "random init -> ChestX-ray14", id="chestxray14"),
        pytest.param("inat2021", "resnet50.supervised -> iNat2021", id="inat2021"),
        pytest.param("moco-v2", "resnet50.moco-v2", id="no-parent"),
    ],
)
def test_recorded_parent_chain(source: str, chain: str) -> None:
    assert describe_chain(weights_chain("resnet50", source)) == chain


# --------------------------------------------------------------------------- release layouts
def _prefixed(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() for k, v in sd.items()}


def _head(prefix: str, *names: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{n}": torch.randn(3, 2) for n in names}


def torchvision(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
    """torchvision's own file: the state dict with its 1000-class fc."""
    return {**sd, "fc.weight": torch.randn(10, 32), "fc.bias": torch.randn(10)}, [
        "fc.bias",
        "fc.weight",
    ]


def inat(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
    """NeWT's iNat2021 files: {'state_dict': torchvision keys + a 10,000-class fc}."""
    head = {"fc.weight": torch.randn(10000, 32), "fc.bias": torch.randn(10000)}
    return {"state_dict": {**sd, **head}, "epoch": 90}, sorted(head)


def pycontrast(jigsaw: bool) -> Callable[[Mapping[str, torch.Tensor]], tuple[object, list[str]]]:
    """PyContrast's trainer: model (module.encoder + module.head [+ module.head_jig]),
    model_ema (encoder + head), the contrast memory, the optimizer, the epoch."""

    def write(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
        heads = _head("module.head.", "0.weight", "0.bias", "2.weight", "2.bias")
        if jigsaw:
            heads |= _head("module.head_jig.", "fc1.weight", "fc1.bias", "fc2.weight")
        model = {**_prefixed(sd, "module.encoder."), **heads}
        ema = {**_prefixed(sd, "encoder."), **_head("head.", "0.weight")}
        optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]}
        return {
            "model": model,
            "contrast": {"memory": torch.randn(50, 8), "params": torch.tensor([-1.0, 0.2])},
            "optimizer": optimizer,
            "epoch": 200,
            "model_ema": ema,
        }, sorted(heads)

    return write


def moco(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
    """MoCo's and PCL's main_*.py: {'state_dict': encoder_q (+ its MLP fc), encoder_k, queue}."""
    q = {**_prefixed(sd, "module.encoder_q."), **_head("module.encoder_q.fc.", "0.weight")}
    k = {**_prefixed(sd, "module.encoder_k."), **_head("module.encoder_k.fc.", "0.weight")}
    rest = {"module.queue": torch.randn(8, 16), "module.queue_ptr": torch.zeros(1)}
    state = {**q, **k, **rest}
    dropped = sorted(
        key for key in state if not key.startswith("module.encoder_q.") or ".fc." in key
    )
    return {"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {}}, dropped


def deepcluster(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
    """SwAV / DeepCluster-v2 / SeLa-v2: bare module.* with projection head and prototypes."""
    heads = _head("module.projection_head.", "0.weight", "1.weight", "3.weight")
    heads |= _head("module.prototypes.", "prototypes0.weight", "prototypes1.weight")
    return {**_prefixed(sd, "module."), **heads}, sorted(heads)


def bare(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
    """Barlow Twins' and DINO's backbone files: torchvision keys without fc."""
    return dict(sd), []


def benchmark(prefix: str) -> Callable[[Mapping[str, torch.Tensor]], tuple[object, list[str]]]:
    """The benchmark's engine.py: {'state_dict': DataParallel 'module.' keys + fc.0 (the
    14-label head before its Sigmoid), optimizer, scheduler, epoch, lossMIN}."""

    def write(sd: Mapping[str, torch.Tensor]) -> tuple[object, list[str]]:
        head = _head(f"{prefix}fc.0.", "weight", "bias")
        scheduler = {"mode": "min", "best": 0.12, "num_bad_epochs": 2, "patience": 2}
        state = {**_prefixed(sd, prefix), **head}
        return {
            "epoch": 31,
            "lossMIN": 0.12,
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]},
            "scheduler": scheduler,
        }, sorted(head)

    return write


#: Each torch-file source's release layout (the converted ones have their own tests below).
LAYOUTS = {
    "supervised": torchvision,
    "inat2021": inat,
    "inat2021-mini": inat,
    "insdis": pycontrast(jigsaw=False),
    "pirl": pycontrast(jigsaw=True),
    "infomin": pycontrast(jigsaw=False),
    "moco-v1": moco,
    "moco-v2": moco,
    "pcl-v1": moco,
    "pcl-v2": moco,
    "swav": deepcluster,
    "deepcluster-v2": deepcluster,
    "sela-v2": deepcluster,
    "barlow-twins": bare,
    "dino": bare,
    "chexpert": benchmark("module."),
    "imagenet-chexpert": benchmark("module."),
    "chestxray14": benchmark(""),  # the ChestX-ray14 models: no DataParallel prefix
    "imagenet-chestxray14": benchmark(""),
    "imagenet-mimic": benchmark("module."),
}


def test_every_torch_source_has_a_layout_test() -> None:
    assert set(LAYOUTS) == {n for n, s in SOURCES.items() if not s.convert}


@pytest.mark.parametrize("source", sorted(LAYOUTS))
def test_release_layout_matches_every_backbone_tensor(
    source: str, backbone: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    release, dropped = LAYOUTS[source](backbone)
    path = tmp_path / SOURCES[source].filename
    torch.save(release, path)
    model = stand_in()
    report = load_backbone_weights(model, path)
    assert report.missing == []
    assert sorted(report.unexpected) == dropped
    for key, value in model.state_dict().items():
        assert torch.equal(value, backbone[key]), key


def _full_size_case(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real resnet50 through its named source, from a file in the release's layout; its
    tensors are the file's (the stand-in's checks at full size, ~8 s on the shared machine)."""
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    sd = {
        k: v + 0.01 if v.is_floating_point() else v
        for k, v in create_backbone("resnet50").state_dict().items()
    }
    release, dropped = LAYOUTS[source](sd)
    torch.save(release, tmp_path / SOURCES[source].filename)
    model = create_backbone(f"resnet50.{source}")
    assert model.load_report.missing == []
    assert sorted(model.load_report.unexpected) == dropped
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key
    assert (input_config(f"resnet50.{source}").mean, input_config(f"resnet50.{source}").std) == (
        PUBLISHED[source]
    )


def test_domain_adapted_source_loads_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _full_size_case("imagenet-chexpert", tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(set(LAYOUTS) - {"imagenet-chexpert"}))
def test_every_source_loads_by_name_at_full_size(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _full_size_case(source, tmp_path, monkeypatch)


# ------------------------------------------------------------------------------------- BYOL
class _FrozenDict(Mapping[str, Any]):
    """Haiku's frozendict as the 2020 release pickled it: ``(frozendict, (storage,))``."""

    def __init__(self, storage: dict[str, Any]) -> None:
        self._storage = dict(storage)

    def __getitem__(self, key: str) -> Any:
        return self._storage[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._storage))

    def __len__(self) -> int:
        return len(self._storage)

    def __reduce__(self) -> tuple[object, tuple[dict[str, Any]]]:
        return (_FrozenDict, (self._storage,))


_FrozenDict.__module__, _FrozenDict.__qualname__ = "haiku._src.data_structures", "frozendict"
#: BYOL's NamedTuples of its experiment and optimizer state, under their release names.
_ByolExperimentState = namedtuple(
    "_ByolExperimentState",
    "online_params target_params online_state target_state opt_state",
    module="byol.byol_experiment",
)
_LarsState = namedtuple("LarsState", "mu", module="byol.utils.optimizers")


@pytest.fixture
def release_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The BYOL / Haiku modules the release pickle names, for writing it (reading it must not
    need them: the test removes them before anything is read)."""
    for cls in (_FrozenDict, _ByolExperimentState, _LarsState):
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            monkeypatch.setitem(sys.modules, name, sys.modules.get(name, types.ModuleType(name)))
        monkeypatch.setattr(sys.modules[cls.__module__], cls.__qualname__, cls, raising=False)


def _haiku(
    sd: Mapping[str, torch.Tensor], layers: tuple[int, ...] = STAND_IN["layers"]
) -> tuple[dict, dict]:
    """BYOL's online params / state from torchvision-named tensors: Haiku module names,
    HWIO kernels, (1, 1, 1, C) batch-norm vectors, mean_ema / var_ema states."""
    root = "res_net50"  # Haiku's name of BYOL's ResNet50 module
    params: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def put(module: str, conv: str, bn: str) -> None:
        params[f"{root}/~/{module}"] = _FrozenDict(
            {"w": sd[f"{conv}.weight"].permute(2, 3, 1, 0).numpy()}
        )
        norm = f"{root}/~/{module.replace('conv', 'batchnorm')}"
        vec = {k: sd[f"{bn}.{k}"].numpy().reshape(1, 1, 1, -1) for k in ("weight", "bias")}
        params[norm] = _FrozenDict({"scale": vec["weight"], "offset": vec["bias"]})
        for ema, key in (("mean_ema", "running_mean"), ("var_ema", "running_var")):
            average = sd[f"{bn}.{key}"].numpy().reshape(1, 1, 1, -1)
            state[f"{norm}/~/{ema}"] = _FrozenDict(
                {"average": average, "hidden": average * 0.5, "counter": np.int32(300)}
            )

    put("initial_conv", "conv1", "bn1")
    for layer, blocks in enumerate(layers):
        for b in range(blocks):
            base, t = f"block_group_{layer}/~/block_{b}", f"layer{layer + 1}.{b}"
            for k in range(3):
                put(f"{base}/~/conv_{k}", f"{t}.conv{k + 1}", f"{t}.bn{k + 1}")
            if f"{t}.downsample.0.weight" in sd:
                put(f"{base}/~/shortcut_conv", f"{t}.downsample.0", f"{t}.downsample.1")
    for head in ("projector", "predictor"):
        params[f"{head}/~/linear"] = _FrozenDict({"w": np.ones((32, 4), np.float32)})
        params[f"{head}/~/batch_norm"] = _FrozenDict({"scale": np.ones((1, 4), np.float32)})
        state[f"{head}/~/batch_norm/~/mean_ema"] = _FrozenDict({"average": np.zeros((1, 4))})
    params["classifier"] = _FrozenDict({"w": np.ones((32, 10), np.float32)})
    return params, state


def _byol_release(
    sd: Mapping[str, torch.Tensor], path: Path, layers: tuple[int, ...] = STAND_IN["layers"]
) -> list[str]:
    """Write BYOL's release pickle; return the modules a conversion must drop."""
    params, state = _haiku(sd, layers)
    target = {
        k: _FrozenDict({n: np.zeros_like(a) for n, a in v.items()}) for k, v in params.items()
    }
    experiment = _ByolExperimentState(
        _FrozenDict(params), _FrozenDict(target), _FrozenDict(state), _FrozenDict(state),
        _LarsState(mu=_FrozenDict(target)),
    )  # fmt: skip
    rng = np.array([0, 42], dtype=np.uint32)
    path.write_bytes(pickle.dumps({"experiment_state": experiment, "step": 300000, "rng": rng}))
    encoder = {k for k in [*params, *state] if k.startswith("res_net50/")}
    return sorted({*params, *state} - encoder)


def test_byol_release_converts_to_the_backbone(
    backbone: dict[str, torch.Tensor],
    release_modules: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    release = tmp_path / "pretrain_res50x1.pkl"
    dropped = _byol_release(backbone, release)
    monkeypatch.delitem(sys.modules, "byol.byol_experiment")  # reading needs no BYOL code
    monkeypatch.delitem(sys.modules, "haiku._src.data_structures")
    out = tmp_path / "byol.safetensors"
    assert main(["convert", "byol", str(release), str(out)]) == 0
    assert f"left out {len(dropped)}: classifier, predictor" in capsys.readouterr().out
    model = stand_in()
    report = load_backbone_weights(model, out)
    assert report.unexpected == []
    assert all(k.endswith("num_batches_tracked") for k in report.missing)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, backbone[key]), key
    params, state = read_byol_checkpoint(release)
    assert byol_to_torchvision(params, state)[1] == dropped


def test_byol_pickle_naming_code_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Runs:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    release = tmp_path / "evil.pkl"
    release.write_bytes(pickle.dumps({"experiment_state": Runs()}))
    with pytest.raises(WeightsError, match=r"evil\.pkl: refused to load io\.open"):
        read_byol_checkpoint(release)
    assert not marker.exists()


def test_byol_missing_module_is_named(backbone: dict[str, torch.Tensor]) -> None:
    params, state = _haiku(backbone)
    del state["res_net50/~/block_group_1/~/block_0/~/batchnorm_2/~/var_ema"]
    with pytest.raises(
        WeightsError,
        match=r"x\.pkl: missing 'average' of module 'res_net50/~/block_group_1/~/block_0/~/batchnorm_2/~/var_ema'",
    ):
        byol_to_torchvision(params, state, "x.pkl")


# ----------------------------------------------------------------------------------- SimCLR
def _simclr_variables(
    sd: Mapping[str, torch.Tensor], layers: tuple[int, ...] = STAND_IN["layers"]
) -> dict[str, np.ndarray]:
    """SimCLR's TensorFlow variables from torchvision-named tensors: numbered in creation
    order (stem; per block the projection shortcut first, then conv1..3; each convolution's
    batch norm shares its number), HWIO kernels, with the optimizer's Momentum slots, the
    heads, an EMA copy and global_step around them."""
    order = ["conv1"]
    for layer, blocks in enumerate(layers):
        for b in range(blocks):
            t = f"layer{layer + 1}.{b}"
            short = [f"{t}.downsample.0"] if f"{t}.downsample.0.weight" in sd else []
            order += [*short, f"{t}.conv1", f"{t}.conv2", f"{t}.conv3"]
    out: dict[str, np.ndarray] = {}
    for i, conv in enumerate(order):
        n = f"_{i}" if i else ""
        kernel = sd[f"{conv}.weight"].permute(2, 3, 1, 0).numpy()
        out[f"base_model/conv2d{n}/kernel"] = kernel
        out[f"base_model/conv2d{n}/kernel/Momentum"] = kernel * 0
        bn = conv[:-1] + "1" if conv.endswith("downsample.0") else conv.replace("conv", "bn")
        for tf, key in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean")):
            out[f"base_model/batch_normalization{n}/{tf}"] = sd[f"{bn}.{key}"].numpy()
        out[f"base_model/batch_normalization{n}/moving_variance"] = sd[f"{bn}.running_var"].numpy()
    out["head_supervised/linear_layer/dense/kernel"] = np.ones((32, 10), np.float32)
    out["head_contrastive/nl_0/dense/kernel"] = np.ones((32, 32), np.float32)
    out["ema_model/base_model/conv2d/kernel"] = out["base_model/conv2d/kernel"]
    out["global_step"] = np.array(225206)
    return out


def test_simclr_variables_map_onto_torchvision(backbone: dict[str, torch.Tensor]) -> None:
    variables = _simclr_variables(backbone)
    tensors, dropped = simclr_to_torchvision(variables)
    expected = {k: v.numpy() for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    assert sorted(tensors) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(tensors[key], value, err_msg=key)
    assert "global_step" in dropped and "head_supervised/linear_layer/dense/kernel" in dropped
    assert len(dropped) == len(variables) - len(tensors)  # nothing of the encoder twice


def test_simclr_npz_converts_and_loads(
    backbone: dict[str, torch.Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(tmp_path / "simclr.npz", **_simclr_variables(backbone))
    out = tmp_path / "simclr.safetensors"
    assert main(["convert", "simclr", str(tmp_path / "simclr.npz"), str(out)]) == 0
    model = stand_in()
    report = load_backbone_weights(model, out)
    assert report.unexpected == []
    written = load_file(str(out))
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()[CONVERTED_KEY]) == {
            "converter": "simclr",
            "file": "simclr.npz",
        }
    assert torch.equal(
        written["layer1.0.downsample.0.weight"], backbone["layer1.0.downsample.0.weight"]
    )
    assert main(["convert", "simclr", str(tmp_path / "simclr.npz"), str(out)]) == 2
    assert "simclr.safetensors exists; pass --force" in capsys.readouterr().err


def test_simclr_missing_variable_is_named(backbone: dict[str, torch.Tensor]) -> None:
    variables = _simclr_variables(backbone)
    del variables["base_model/batch_normalization_7/moving_variance"]
    with pytest.raises(
        WeightsError, match="ck: missing variable base_model/batch_normalization_7/moving_variance"
    ):
        simclr_to_torchvision(variables, "ck")


def test_tensorflow_checkpoint_without_tensorflow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.ckpt-225206.index").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails as when not installed
    with pytest.raises(
        ConfigError, match=r"model\.ckpt-225206 needs TensorFlow: pip install tensorflow-cpu"
    ):
        read_tf_checkpoint(tmp_path / "model.ckpt-225206")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["byol", "simclr"])
def test_converted_release_loads_as_the_named_source(
    kind: str,
    release_modules: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    sd = {
        k: v + 0.01 if v.is_floating_point() else v
        for k, v in create_backbone("resnet50").state_dict().items()
    }
    release = tmp_path / "release"
    if kind == "byol":
        _byol_release(sd, release, (3, 4, 6, 3))
    else:
        release = tmp_path / "release.npz"
        np.savez(release, **_simclr_variables(sd, (3, 4, 6, 3)))
    source = "byol" if kind == "byol" else "simclr-v1"
    assert main(["convert", kind, str(release), str(tmp_path / SOURCES[source].filename)]) == 0
    model = create_backbone(f"resnet50.{source}")
    assert model.load_report.unexpected == []
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, sd[key]), key


def test_tensorflow_checkpoint_converts_where_tensorflow_is_installed(
    backbone: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """A TF1 checkpoint (tensor bundle) written by ``tf.compat.v1.train.Saver``, as SimCLR's
    release was, read through TensorFlow's reader (skipped without TensorFlow)."""
    tf = pytest.importorskip("tensorflow")
    variables = _simclr_variables(backbone)
    del variables["global_step"]
    graph = tf.Graph()
    with graph.as_default():
        for name, value in variables.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "model.ckpt"), global_step=225206)
    tensors, dropped = simclr_to_torchvision(read_tf_checkpoint(prefix), prefix)
    for key, value in tensors.items():
        np.testing.assert_array_equal(value, backbone[key].numpy(), err_msg=key)
    assert sorted(dropped) == sorted(set(variables) - {k for k in variables if _encoder(k)})


def _encoder(name: str) -> bool:
    """Whether a SimCLR variable is one the backbone takes (no slot, EMA copy or head)."""
    return name.startswith("base_model/") and not name.endswith("/Momentum")
