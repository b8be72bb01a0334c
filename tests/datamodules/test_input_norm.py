"""Weight-aware preprocessing: one datamodule feeds each backbone the inputs its weights were
trained with -- a self-supervised ResNet-50 ImageNet mean / std, BiT [-1, 1] -- checked against
pixels computed independently from the image files (PIL + OpenCV); the task normalises on the
device, the datamodule never asks it how (one set of uint8 datasets for every task); an
explicit normalisation that contradicts the weights is warned about once; a checkpoint records
it."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from bit_format import write_bit_npz
from PIL import Image

from medxfer.backbones import create_backbone
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.tasks import MultiLabelClassifier

#: torchvision's published ImageNet normalisation (its documentation), and BiT's [-1, 1].
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SIGNED = {"mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with a MoCo-v2-layout ResNet-50 file and a BiT-M R50x1 ``.npz``."""
    folder = tmp_path_factory.mktemp("weights")
    encoder = timm.create_model("resnet50", num_classes=0).state_dict()
    torch.save(
        {"state_dict": {f"module.encoder_q.{k}": v for k, v in encoder.items()}},
        folder / "moco_v2_800ep_pretrain.pth.tar",
    )
    write_bit_npz(create_backbone("bit-r50x1"), folder / "BiT-M-R50x1.npz")
    return folder


def _pixels(dm: ChestXrayDataModule) -> torch.Tensor:
    """The first validation image as the dataset should hand it out, computed from its file
    without medxfer: decode, scale to [0, 1], area-resize to 32 px, round to 8 bits, 3 channels."""
    path = dm.val_set.paths[0]
    grey = np.asarray(Image.open(path).convert("L"), np.float32) / 255.0
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.rint(np.clip(small, 0, 1) * 255).astype(np.uint8))[None].repeat(
        3, 1, 1
    )


def _expected(dm: ChestXrayDataModule, norm: dict[str, list[float]]) -> torch.Tensor:
    """What the backbone should receive: those pixels on [0, 1], normalised per channel."""
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    return (_pixels(dm).double() / 255 - mean.double()) / std.double()


@pytest.mark.parametrize(
    ("backbone", "pretrained", "norm"),
    [
        pytest.param("resnet50", "moco-v2", IMAGENET, id="ssl-resnet50-imagenet"),
        pytest.param("bit-r50x1", "bit-m", SIGNED, id="bit-minus-one-to-one"),
    ],
)
def test_backbone_receives_the_normalisation_of_its_weights(
    synthetic_cxr, weights: Path, tiny_trainer, monkeypatch, backbone, pretrained, norm
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(weights))
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])),
        image_size=32,
        resize=32,
        augment=False,
        num_workers=0,
        batch_size=4,
    )
    task = MultiLabelClassifier(
        backbone=backbone,
        pretrained=pretrained,
        num_classes=dm.num_classes,
        label_names=dm.label_names,
    )
    assert task.input_norm == norm and task.hparams["input_norm"] == norm
    seen: list[torch.Tensor] = []
    task.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    tiny_trainer(limit_val_batches=1).validate(task, datamodule=dm, verbose=False)
    assert dm.val_set[0]["image"].dtype == torch.uint8
    torch.testing.assert_close(seen[0][0].double(), _expected(dm, norm), atol=1e-5, rtol=1e-5)


def test_one_datamodule_serves_every_backbone_without_a_rebuild(
    synthetic_cxr, weights, tiny_trainer, monkeypatch
) -> None:
    """The same datasets (built once, the same uint8 pixels) feed a task of either
    normalisation; each backbone receives its own. The datamodule has no normalisation."""
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(weights))
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])),
        image_size=32,
        resize=32,
        augment=False,
        num_workers=0,
        batch_size=4,
    )
    assert not hasattr(dm, "input_norm")
    built = None
    for backbone, pretrained, norm in (
        ("resnet50", "moco-v2", IMAGENET),
        ("bit-r50x1", "bit-m", SIGNED),
    ):
        task = MultiLabelClassifier(
            backbone=backbone, pretrained=pretrained, num_classes=dm.num_classes
        )
        seen: list[torch.Tensor] = []
        task.backbone.register_forward_pre_hook(
            lambda _m, args, seen=seen: seen.append(args[0].detach().clone())
        )
        tiny_trainer(limit_val_batches=1).validate(task, datamodule=dm, verbose=False)
        built = built or (dm.train_set, dm.val_set)
        assert (dm.train_set, dm.val_set) == built  # the same objects: never rebuilt
        assert torch.equal(dm.val_set[0]["image"], _pixels(dm))
        torch.testing.assert_close(seen[0][0].double(), _expected(dm, norm), atol=1e-5, rtol=1e-5)


def test_contradicting_override_warns_once_and_is_used(weights, monkeypatch) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(weights))
    with pytest.warns(
        UserWarning, match=r"input_norm=.* contradicts the normalisation of the weights"
    ):
        task = MultiLabelClassifier(backbone="resnet50", pretrained="moco-v2", input_norm=SIGNED)
    assert task.input_norm == SIGNED
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same contradiction again: no second warning
        MultiLabelClassifier(backbone="resnet50", pretrained="moco-v2", input_norm=SIGNED)
        MultiLabelClassifier(
            backbone="resnet50", pretrained="moco-v2", input_norm=IMAGENET
        )  # agrees


def test_checkpoint_records_the_normalisation_and_restores_it(
    weights, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(weights))
    task = MultiLabelClassifier(backbone="resnet50", pretrained="moco-v2", num_classes=2)
    checkpoint: dict = {"hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    hp = checkpoint["hyper_parameters"]
    assert hp["input_norm"] == IMAGENET and hp["pretrained"] is None
    restored = MultiLabelClassifier(**hp)  # as load_from_checkpoint does: no weight file needed
    assert restored.input_norm == IMAGENET
