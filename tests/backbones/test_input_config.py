"""``input_config``: every way of choosing weights gives the normalisation those weights were
trained with, checked against values published elsewhere (torchvision's docs, timm's
``pretrained_cfg``, BiT's [-1, 1]) and against checkpoints written here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from medxfer.backbones import (
    BACKBONES,
    INPUT_NORM_KEY,
    InputConfig,
    WeightSource,
    create_backbone,
    input_config,
)

# torchvision docs ("all pre-trained models expect ... normalized using mean = [0.485, 0.456,
# 0.406] and std = [0.229, 0.224, 0.225]")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# BiT (Kolesnikov et al. 2020) and Mustafa et al. (2021): inputs scaled to [-1, 1]
BIT = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _timm(model: str) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
    cfg = get_pretrained_cfg(model)
    return tuple(cfg.mean), tuple(cfg.std), tuple(cfg.input_size)


@pytest.fixture(autouse=True)
def empty_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No named weight file exists: input_config must read metadata only."""
    folder = tmp_path / "no-weights-here"
    folder.mkdir()
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(folder))
    return folder


@pytest.mark.parametrize(
    ("name", "pretrained", "mean", "std", "size"),
    [
        pytest.param("bit-r50x1.bit-m", None, *BIT, (3, 224, 224), id="bit-m-r50x1"),
        pytest.param("bit-r152x4", "bit-s", *BIT, (3, 224, 224), id="bit-s-r152x4"),
        pytest.param(
            "bit-r50x1.bit-m",
            None,
            *_timm("resnetv2_50x1_bit.goog_in21k")[:2],
            _timm("resnetv2_50x1_bit.goog_in21k")[2],
            id="bit-m-as-timm-goog_in21k",
        ),
        pytest.param(
            "resnet50v2-bn.in1k", None, *_timm("resnetv2_50.a1h_in1k"), id="resnet50v2-bn-in1k"
        ),
        pytest.param("resnet50.supervised", None, *IMAGENET, (3, 224, 224), id="torchvision"),
        pytest.param("resnet50", "moco-v2", *IMAGENET, (3, 224, 224), id="moco-v2"),
        pytest.param("resnet50", "dino", *IMAGENET, (3, 224, 224), id="dino"),
        pytest.param(
            "resnet50",
            "simclr-v1",
            (0.0, 0.0, 0.0),
            (1.0, 1.0, 1.0),
            (3, 224, 224),
            id="simclr-v1-unnormalised",
        ),
    ],
)
def test_named_source_without_its_file(
    name: str,
    pretrained: str | None,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: tuple[int, ...],
) -> None:
    cfg = input_config(name, pretrained)
    assert (cfg.mean, cfg.std, cfg.input_size) == (mean, std, size)
    arch, _, source = name.partition(".")
    assert cfg.origin == f"weight source {arch}.{source or pretrained}"


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("resnet18", id="resnet18-default-tag"),
        pytest.param("resnet18.a1_in1k", id="resnet18-a1"),
        pytest.param("resnetv2_50x1_bit.goog_in21k_ft_in1k", id="bit-448"),
        pytest.param("vit_small_patch16_224.augreg_in21k", id="vit"),
    ],
)
def test_timm_pretrained_cfg(model: str) -> None:
    cfg = input_config(f"timm/{model}", "timm")
    assert (cfg.mean, cfg.std, cfg.input_size) == _timm(model)
    ref = get_pretrained_cfg(model)
    assert cfg.origin == f"timm pretrained_cfg of {ref.architecture}.{ref.tag}"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("resnet50", id="resnet50"),
        pytest.param("bit-r50x1", id="bit"),
        pytest.param("timm/resnet18.a1_in1k", id="timm-tag-is-not-a-source"),
    ],
)
def test_random_init_is_minus_one_to_one(name: str) -> None:
    cfg = input_config(name)
    assert (cfg.mean, cfg.std, cfg.input_size) == (*BIT, None)
    assert "no pre-trained weights" in cfg.origin


def _ckpt(path: Path, hparams: object) -> Path:
    """A Lightning-layout checkpoint holding ``hparams`` as its hyper_parameters."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": hparams}, path)
    return path


@pytest.mark.parametrize(
    "name", [pytest.param("resnet50", id="registered"), pytest.param("timm/resnet18", id="timm")]
)
@pytest.mark.parametrize(
    ("norm", "size"),
    [
        pytest.param({"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}, None, id="mean-std"),
        pytest.param(
            {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "input_size": [3, 320, 320]},
            (3, 320, 320),
            id="with-size",
        ),
    ],
)
def test_checkpoint_trained_with_input_norm(
    tmp_path: Path, name: str, norm: dict, size: tuple[int, ...] | None
) -> None:
    path = _ckpt(tmp_path / "last.ckpt", {INPUT_NORM_KEY: norm, "lr": 0.1})
    cfg = input_config(name, path)
    assert cfg == InputConfig((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), size, cfg.origin)
    assert cfg.origin == f"checkpoint {path} (trained with it)"


class _Task(L.LightningModule):
    def __init__(self, input_norm: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoint_written_by_a_lightning_trainer(tmp_path: Path, tiny_trainer) -> None:
    norm = {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}
    trainer = tiny_trainer(max_steps=1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)))
    trainer.fit(_Task(norm), train_dataloaders=data)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")
    cfg = input_config("resnet50", tmp_path / "trained.ckpt")
    assert (cfg.mean, cfg.std) == ((0.2, 0.3, 0.4), (0.5, 0.6, 0.7))


@dataclass
class _NotWeightsOnly:
    lr: float


@pytest.mark.parametrize(
    "hparams",
    [
        pytest.param({"lr": 0.1}, id="no-input-norm"),
        pytest.param(None, id="no-hparams"),
        pytest.param({"opt": _NotWeightsOnly(0.1)}, id="not-weights-only"),
    ],
)
def test_checkpoint_without_readable_input_norm_falls_through(
    tmp_path: Path, hparams: object
) -> None:
    path = _ckpt(tmp_path / "other.ckpt", hparams)
    cfg = input_config("resnet50", path)
    assert (cfg.mean, cfg.std, cfg.input_size) == (*IMAGENET, (3, 224, 224))
    # the resnet50 sources disagree (SimCLR v1 takes unnormalised input): the first is used
    assert cfg.origin == (
        f"the first resnet50 source (supervised), as its sources disagree (local file {path})"
    )
    timm_cfg = input_config("timm/resnet18", path)
    assert (timm_cfg.mean, timm_cfg.std, timm_cfg.input_size) == _timm("resnet18")
    assert timm_cfg.origin == f"timm pretrained_cfg of resnet18.a1_in1k (local file {path})"


def test_local_weight_files(tmp_path: Path) -> None:
    pth = tmp_path / "my-resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, pth)
    cfg = input_config("resnet50", pth)
    assert (cfg.mean, cfg.std) == IMAGENET
    assert str(pth) in cfg.origin

    bit = input_config("bit-r50x1", tmp_path / "my-resnet50.pth")
    assert (bit.mean, bit.std) == BIT

    st = tmp_path / "resnet18.safetensors"
    save_file(create_backbone("timm/resnet18").state_dict(), str(st))
    timm_cfg = input_config("timm/resnet18", st)
    assert (timm_cfg.mean, timm_cfg.std, timm_cfg.input_size) == _timm("resnet18")
    assert str(st) in timm_cfg.origin


def test_disagreeing_sources_use_the_first_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = BACKBONES.entry("resnet50").metadata["sources"]
    monkeypatch.setitem(sources, "odd", WeightSource("odd.pth", "-", "-", mean=(0.0, 0.0, 0.0)))
    pth = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, pth)
    cfg = input_config("resnet50", pth)
    assert (cfg.mean, cfg.std) == IMAGENET
    assert "first resnet50 source (supervised)" in cfg.origin
    assert "disagree" in cfg.origin
    assert input_config("resnet50", "odd").mean == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("norm", "needle"),
    [
        pytest.param({"mean": [0.1, 0.2], "std": [0.4, 0.5, 0.6]}, "'mean'", id="two-means"),
        pytest.param({"mean": [0.1, 0.2, 0.3]}, "'std'", id="no-std"),
        pytest.param({"mean": [0.1, 0.2, 0.3], "std": "wide"}, "'std'", id="std-text"),
        pytest.param([0.5, 0.5], "'mean'", id="not-a-dict"),
    ],
)
def test_malformed_input_norm_names_the_file(tmp_path: Path, norm: object, needle: str) -> None:
    path = _ckpt(tmp_path / "bad.ckpt", {INPUT_NORM_KEY: norm})
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        input_config("resnet50", path)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("name", "pretrained", "error", "match"),
    [
        pytest.param(
            "resnet50", "/nowhere/w.pth", FileNotFoundError, "/nowhere/w.pth", id="no-file"
        ),
        pytest.param("resnet50", "mocov2", KeyError, "moco-v2", id="unknown-source"),
        pytest.param("no-such-arch", None, KeyError, "no-such-arch", id="unknown-arch"),
        pytest.param("timm/no_such_model", "timm", ValueError, "no_such_model", id="unknown-timm"),
        pytest.param("timm/resnet18.bogus", None, ValueError, "bogus", id="unknown-timm-tag"),
        pytest.param("resnet50.swav", "dino", ValueError, "swav", id="name-and-source-differ"),
    ],
)
def test_bad_names(name: str, pretrained: str | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        input_config(name, pretrained)
