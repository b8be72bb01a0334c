"""Weight-aware preprocessing: one datamodule config feeds each backbone the inputs its weights
were trained with -- a self-supervised ResNet-50 ImageNet mean / std, BiT [-1, 1] -- checked
against pixels computed independently from the image files (PIL + OpenCV); an explicit
normalisation that contradicts the weights is warned about once; a checkpoint records it."""

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


def _expected(dm: ChestXrayDataModule, norm: dict[str, list[float]]) -> torch.Tensor:
    """The first validation image, computed from its file without medxfer: decode, scale to
    [0, 1], area-resize to 32 px, normalise per channel."""
    path = dm.val_set.paths[0]
    grey = np.asarray(Image.open(path).convert("L"), np.float32) / 255.0
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    return (torch.from_numpy(small)[None].expand(3, -1, -1) - mean) / std


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
    torch.testing.assert_close(seen[0][0], _expected(dm, norm), atol=1e-5, rtol=1e-5)


def test_one_datamodule_rebuilds_for_another_backbone(
    synthetic_cxr, weights, tiny_trainer, monkeypatch
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(weights))
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])),
        image_size=32,
        resize=32,
        augment=False,
        num_workers=0,
    )
    for backbone, pretrained, norm in (
        ("resnet50", "moco-v2", IMAGENET),
        ("bit-r50x1", "bit-m", SIGNED),
    ):
        task = MultiLabelClassifier(
            backbone=backbone, pretrained=pretrained, num_classes=dm.num_classes
        )
        tiny_trainer(limit_val_batches=1).validate(task, datamodule=dm, verbose=False)
        torch.testing.assert_close(
            dm.val_set[0]["image"], _expected(dm, norm), atol=1e-5, rtol=1e-5
        )


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
