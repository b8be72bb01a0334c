"""``medxfer export``: the exported backbone gives features identical to the checkpoint's, its
normalisation and weights chain survive export -> fine-tune -> export, and exported files in the
weights folder are named sources of their architecture (listed without torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medxfer.backbones import create_backbone, input_config, weights_chain
from medxfer.backbones.export import export_backbone
from medxfer.backbones.exported import read_export_metadata
from medxfer.backbones.weights import WeightsError
from medxfer.commands import main
from medxfer.commands.export import run_checkpoint
from medxfer.errors import ConfigError
from medxfer.tasks import MultiLabelClassifier

NORM = {"mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]}


def fitted(task: MultiLabelClassifier, tmp_path: Path, name: str, tiny_trainer) -> Path:
    """``task`` after two optimizer steps on random data, saved as a Lightning checkpoint."""
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    samples = [{"image": images[i], "target": torch.rand(2).round()} for i in range(8)]
    batches = torch.utils.data.DataLoader(samples, batch_size=4)
    trainer = tiny_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=batches)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_export_fine_tune_export_keeps_features_normalisation_and_chain(
    tmp_path: Path, tiny_trainer
) -> None:
    first = MultiLabelClassifier(backbone="timm/test_resnet", num_classes=2, input_norm=NORM)
    ckpt = fitted(first, tmp_path, "first", tiny_trainer)
    out = tmp_path / "first.safetensors"
    meta = export_backbone(ckpt, out)
    assert meta["architecture"] == "timm/test_resnet" and meta["input_norm"] == NORM
    assert meta["chain"][0]["start"] == "random init" and meta["chain"][-1]["steps"] == 2
    restored = create_backbone("timm/test_resnet", pretrained=out).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored(x), first.backbone.eval()(x), rtol=0, atol=0)
    assert input_config("timm/test_resnet", out).mean == tuple(NORM["mean"])

    second = MultiLabelClassifier(backbone="timm/test_resnet", num_classes=2, pretrained=str(out))
    assert second.input_norm["mean"] == NORM["mean"], "the export's normalisation is used"
    assert second.hparams.weights_chain == meta["chain"]
    out2 = tmp_path / "second.safetensors"
    meta2 = export_backbone(fitted(second, tmp_path, "second", tiny_trainer), out2)
    assert meta2["chain"][:-1] == meta["chain"] and len(meta2["chain"]) == 3
    assert [s.get("exported_to") for s in meta2["chain"][1:]] == [out.name, out2.name]
    assert read_export_metadata(out2) == meta2 and meta2["input_norm"]["mean"] == NORM["mean"]
    with pytest.raises(ConfigError, match="exists; pass --force"):
        export_backbone(ckpt, out)
    export_backbone(ckpt, out, force=True)


def test_a_checkpoint_without_a_backbone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.weight": torch.zeros(2, 2)}, "hyper_parameters": {}}, path)
    with pytest.raises(WeightsError, match="has no backbone to export"):
        export_backbone(path, tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match=r"no last\.ckpt in the run folder"):
        run_checkpoint(tmp_path)
    assert run_checkpoint(path) == path


def test_exports_in_the_weights_folder_are_named_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    chain = [{"start": "bit-r50x1.bit-m"}, {"trained_on": {"name": "chexpert"}, "steps": 10}]
    meta = {
        "format": "medxfer-backbone/1",
        "architecture": "bit-r50x1",
        "input_norm": NORM,
        "chain": chain,
    }
    save_file(
        {"stem.conv.weight": torch.zeros(1)},
        str(tmp_path / "cxr_r50.safetensors"),
        {"medxfer": json.dumps(meta)},
    )
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))  # not an export
    assert main(["list", "backbones", "bit-r50x1"]) == 0
    printed = capsys.readouterr().out
    assert "cxr_r50.safetensors  present  (exported: bit-r50x1.bit-m -> chexpert)" in printed
    assert "plain" not in printed
    assert input_config("bit-r50x1", "cxr_r50").std == tuple(NORM["std"])  # named by its stem
    assert weights_chain("bit-r50x1", "cxr_r50") == chain
    assert weights_chain("bit-r50x1", "bit-m") == [
        {"start": "bit-r50x1.bit-m", "file": "BiT-M-R50x1.npz"}
    ]
