"""Backbone registry and weight loading: every entry builds; BiT .npz, SSL-wrapped and plain
state dicts load with every backbone tensor matched; bad files fail loudly."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from bit_format import write_bit_npz
from safetensors.torch import save_file
from timm.models.resnet import Bottleneck, ResNet
from timm.models.resnetv2 import _load_weights as timm_load_bit_npz

from medxfer.backbones import create_backbone, list_backbones, load_backbone_weights
from medxfer.backbones.weights import WeightsError
from medxfer.tasks import MultiLabelClassifier

LARGE = {"bit-r50x3", "bit-r101x3", "bit-r152x2", "bit-r152x4"}


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make every tensor distinctive so that a wrong mapping changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, id=n, marks=[pytest.mark.slow] if n in LARGE else [])
        for n in list_backbones()
    ]
    + [
        pytest.param("timm/resnet18", id="timm-resnet18"),
        pytest.param("timm/efficientnet_b0", id="timm-effnet"),
    ],
)
def test_every_backbone_builds_and_runs(name: str) -> None:
    model = create_backbone(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model(x)
        inter = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert feats.shape == (2, model.num_features)
    info = model.feature_info
    info = info.get_dicts() if hasattr(info, "get_dicts") else info
    assert [t.shape[1] for t in inter] == [info[0]["num_chs"], info[1]["num_chs"]]


def test_bit_npz_loads_every_parameter_and_matches_timm_reference(tmp_path: Path) -> None:
    source = _perturbed(create_backbone("bit-r50x1"))
    path = tmp_path / "BiT-M-R50x1.npz"
    write_bit_npz(source, path)

    loaded = create_backbone("bit-r50x1", pretrained=path).eval()
    report = loaded.load_report
    assert report.missing == []
    assert len(report.matched) == len(loaded.state_dict())
    assert sorted(report.unexpected) == ["head.fc.bias", "head.fc.weight"]  # the 21k/1k classifier

    reference = timm.create_model(
        "resnetv2_50x1_bit", num_classes=0
    ).eval()  # timm's own npz loader
    timm_load_bit_npz(reference, str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
        torch.testing.assert_close(loaded(x), reference(x))


def test_named_source_resolves_from_weights_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        create_backbone("bit-r50x1.bit-m")
    assert "BiT-M-R50x1.npz" in str(err.value) and str(tmp_path) in str(err.value)
    write_bit_npz(_perturbed(create_backbone("bit-r50x1")), tmp_path / "BiT-M-R50x1.npz")
    model = create_backbone("bit-r50x1", pretrained="bit-m")
    assert model.load_report.path == str(tmp_path / "BiT-M-R50x1.npz")
    with pytest.raises(KeyError, match="bit-s, bit-m"):
        create_backbone("bit-r50x1", pretrained="bit-xl")


def _small_resnet() -> torch.nn.Module:
    """A bottleneck ResNet with torchvision / timm ResNet-50 key names (the layouts' loader
    tests need the names, not the size; the named sources at full size: test_zoo.py)."""
    return ResNet(
        block=Bottleneck, layers=(2, 1, 1, 1), channels=(4, 8, 16, 32), stem_width=8, num_classes=0
    )


def _moco(sd: dict) -> dict:
    wrapped = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    wrapped |= {f"module.encoder_k.{k}": v.clone() for k, v in sd.items()}
    wrapped |= {
        "module.encoder_q.fc.0.weight": torch.randn(16, 32),
        "module.queue": torch.randn(128, 64),
    }
    return {"epoch": 200, "arch": "resnet50", "state_dict": wrapped}


def _swav(sd: dict) -> dict:
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    return wrapped | {
        "module.projection_head.0.weight": torch.randn(8, 32),
        "module.prototypes.weight": torch.randn(3, 8),
    }


def _plain(sd: dict) -> dict:
    return dict(sd)


@pytest.mark.parametrize(
    ("wrap", "suffix", "n_unexpected"),
    [
        pytest.param(_moco, ".pth.tar", -2, id="moco-encoder_q"),  # momentum encoder + fc + queue
        pytest.param(_swav, ".pth.tar", 2, id="swav-module"),
        pytest.param(_plain, ".pth", 0, id="plain-state-dict"),
        pytest.param(_plain, ".safetensors", 0, id="safetensors"),
    ],
)
def test_ssl_checkpoints_load_with_all_backbone_keys(
    tmp_path: Path, wrap, suffix: str, n_unexpected: int
) -> None:
    source = _perturbed(_small_resnet())  # ResNet-50's key names at 44k parameters
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(wrap(sd), str(path))
    else:
        torch.save(wrap(sd), path)
    model = _small_resnet().eval()
    report = load_backbone_weights(model, path)
    assert report.missing == []
    # negative: a whole second copy of the backbone (MoCo's momentum encoder) plus |n| heads
    expected = len(sd) - n_unexpected if n_unexpected < 0 else n_unexpected
    assert len(report.unexpected) == expected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_missing_backbone_keys_fail_with_their_names(tmp_path: Path) -> None:
    sd = create_backbone("resnet50").state_dict()
    del sd["layer4.2.conv3.weight"], sd["bn1.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="missing") as err:
        create_backbone("resnet50", pretrained=path)
    assert "layer4.2.conv3.weight" in str(err.value) and "bn1.running_var" in str(err.value)


def test_shape_mismatch_fails(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("timm/resnet18").state_dict(), path)
    with pytest.raises(ValueError, match="Shape mismatches"):
        create_backbone("resnet50", pretrained=path)


def test_pickle_that_is_not_weights_only_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth.tar"
    torch.save(
        {
            "state_dict": create_backbone("timm/resnet18").state_dict(),
            "args": argparse.Namespace(lr=0.1),
        },
        path,
    )
    with pytest.raises(ValueError, match="not weights-only"):
        create_backbone("timm/resnet18", pretrained=path)


def test_one_channel_input_sums_rgb_kernels(tmp_path: Path) -> None:
    sd = _perturbed(create_backbone("timm/resnet18")).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    model = create_backbone("timm/resnet18", pretrained=path, in_chans=1)
    assert model.load_report.adapted_input
    torch.testing.assert_close(model.conv1.weight, sd["conv1.weight"].sum(dim=1, keepdim=True))
    # a grey image repeated over RGB gives the same features through the RGB model
    rgb = create_backbone("timm/resnet18", pretrained=path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4
        )


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    model = create_backbone("timm/resnet18")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weight format"):
        load_backbone_weights(model, tmp_path / "w.onnx")
    with pytest.raises(FileNotFoundError, match=r"nothere\.pth"):
        create_backbone("timm/resnet18", pretrained=tmp_path / "nothere.pth")


def test_unknown_backbone_names_the_list_command() -> None:
    with pytest.raises(KeyError, match="medxfer list backbones"):
        create_backbone("bit-r999x9")


# --- a file of another architecture (issue 15, nothing silent) ---------------------------------


def test_resnet34_weights_into_a_resnet18_name_the_unexpected_tensors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r34 = timm.create_model("resnet34", num_classes=1000).state_dict()  # with its classifier
    r18 = timm.create_model("resnet18", num_classes=0).state_dict()
    inside = sorted(k for k in set(r34) - set(r18) if not k.startswith("fc."))
    assert len(inside) == 96  # the 8 extra BasicBlocks, 12 tensors each
    path = tmp_path / "r34.pth"
    torch.save(r34, path)
    with pytest.raises(WeightsError) as err:
        create_backbone("timm/resnet18", pretrained=path)
    message = str(err.value)
    assert f"{path}: 96 tensor(s) in the file lie inside the backbone's modules" in message
    assert "120 matched, 0 missing, 98 unexpected" in message
    assert "(+86)" in message and "allow_unexpected: true" in message
    shown = message.split("Unexpected: ")[1].split(", ... (+86)")[0].split(", ")
    assert len(shown) == 10 and set(shown) <= set(inside)

    with caplog.at_level(logging.INFO, logger="medxfer.backbones.weights"):
        task = MultiLabelClassifier(
            backbone="timm/resnet18", pretrained=str(path), allow_unexpected=True
        )
    report = task.backbone.load_report
    assert (len(report.matched), len(report.missing), len(report.unexpected)) == (120, 0, 98)
    assert "96 tensor(s) inside the backbone's modules" in caplog.text  # the warning
    assert "120 matched, 0 missing, 98 unexpected" in caplog.text  # the INFO report
    torch.testing.assert_close(task.backbone.layer4[1].conv2.weight, r34["layer4.1.conv2.weight"])


def test_every_weight_file_error_is_a_weights_error(tmp_path: Path) -> None:
    model = create_backbone("timm/resnet18")
    (tmp_path / "w.onnx").write_bytes(b"x")
    torch.save({"state_dict": {"lr": 0.1}}, tmp_path / "empty.pth")
    sd = model.state_dict()
    del sd["layer1.0.conv1.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    for name, message in [
        ("w.onnx", "unknown weight format"),
        ("empty.pth", "no tensors found"),
        ("partial.pth", "missing from the file"),
    ]:
        with pytest.raises(WeightsError, match=message):
            load_backbone_weights(model, tmp_path / name)
    assert issubclass(WeightsError, ValueError)


# --- weight values and unreadable files (issue 25) ---------------------------------------------


def _resnet18_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_backbone("timm/resnet18").state_dict().items()}


def test_nan_and_infinite_weights_are_refused_naming_file_and_tensor(tmp_path: Path) -> None:
    sd = _resnet18_state()
    sd["layer3.1.conv2.weight"][0, 0, 0, :2] = float("nan")  # 256 * 256 * 3 * 3 = 589824 values
    sd["layer4.0.bn1.running_var"][7] = float("inf")  # later in the file: the count says so
    path = tmp_path / "diverged.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(WeightsError) as err:
        create_backbone("timm/resnet18", pretrained=path)
    assert str(err.value) == (
        f"{path}: tensor 'module.layer3.1.conv2.weight' holds 2 NaN and 0 infinite of 589824 "
        "values (2 non-finite tensor(s) of 120 loaded): a diverged run or a damaged file"
    )


def test_integer_weights_are_refused_but_integer_counters_and_half_precision_load(
    tmp_path: Path,
) -> None:
    sd = _resnet18_state()
    counters = [k for k in sd if k.endswith("num_batches_tracked")]
    assert len(counters) == 20 and len(sd) == 120  # 20 BatchNorms: 100 float tensors
    torch.save({k: v.long() for k, v in sd.items()}, tmp_path / "int64.pth")
    with pytest.raises(WeightsError) as err:
        create_backbone("timm/resnet18", pretrained=tmp_path / "int64.pth")
    assert str(err.value).startswith(
        f"{tmp_path / 'int64.pth'}: tensor 'conv1.weight' is int64 where the backbone expects "
        "floating point (100 such tensor(s) of 120 loaded)"
    )
    # float16 weights are weights (cast on load); int64 counters are counters
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    model = create_backbone("timm/resnet18", pretrained=tmp_path / "half.safetensors")
    torch.testing.assert_close(model.conv1.weight, sd["conv1.weight"].half().float())


def _text(path: Path) -> None:
    path.write_text("resnet18 weights, see the wiki\n")


def _truncated(path: Path) -> None:
    sd = _resnet18_state()
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    else:
        torch.save(sd, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_text, _truncated], ids=["text", "truncated"])
@pytest.mark.parametrize(
    ("suffix", "kind"), [(".safetensors", ".safetensors"), (".npz", ".npz"), (".pth", "torch")]
)
def test_a_file_that_is_not_valid_in_its_format_is_named(
    tmp_path: Path, damage, suffix: str, kind: str
) -> None:
    path = tmp_path / f"weights{suffix}"
    damage(path)
    with pytest.raises(WeightsError) as err:
        create_backbone("timm/resnet18", pretrained=path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a valid {kind} file (text, or truncated?): ")
    assert "\n" not in message and "weights-only" not in message


def test_a_directory_given_as_weights_is_a_directory_and_its_files_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "resnet18.a1_in1k"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text("{}")
    with pytest.raises(IsADirectoryError) as err:
        create_backbone("timm/resnet18", pretrained=folder)
    assert str(err.value) == (
        f"weight file {folder} is a directory, not a file; weight files inside it: "
        "model.safetensors"
    )
    # a named source whose expected file is a folder
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "BiT-M-R50x1.npz").mkdir()
    with pytest.raises(IsADirectoryError, match=r"BiT-M-R50x1\.npz is a directory, not a file$"):
        create_backbone("bit-r50x1.bit-m")


def test_random_init_is_said_once_per_architecture(caplog: pytest.LogCaptureFixture) -> None:
    from medxfer.backbones import _note_random_init

    _note_random_init.cache_clear()  # another test may have built these already
    with caplog.at_level(logging.INFO, logger="medxfer.backbones"):
        create_backbone("timm/resnet18")
        create_backbone("timm/resnet18", in_chans=1)
        create_backbone("resnet50")
    notices = [r for r in caplog.records if "starts from random weights" in r.getMessage()]
    assert [r.getMessage().split()[1] for r in notices] == ["timm/resnet18", "resnet50"]
    assert notices[0].levelno == logging.INFO


def test_loaded_weights_say_nothing_about_random_init(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from medxfer.backbones import _note_random_init

    torch.save(_resnet18_state(), tmp_path / "r18.pth")
    _note_random_init.cache_clear()
    with caplog.at_level(logging.INFO, logger="medxfer.backbones"):
        create_backbone("timm/resnet18", pretrained=tmp_path / "r18.pth")
    assert "random weights" not in caplog.text
