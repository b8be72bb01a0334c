"""Evaluate one seeded model on 1 process or on N DDP ranks and dump what was logged.

Run as a script (Lightning's DDP launcher re-executes it once per rank)::

    python tests/ddp_check.py DATA_DIR OUT.json DEVICES [cxr|seg|masks]

``cxr``: a multi-label classifier on the synthetic CheXpert / NIH folders (AUROC, ECE,
subgroups); ``seg``: a U-Net on a synthetic Montgomery folder (Dice, IoU); ``masks``: the same
U-Net's ``predict`` with a CSV logger and the ``MaskWriter`` (every PNG and its foreground).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import numpy as np

from medxfer.callbacks import CalibrationCallback, MaskWriter, SubgroupCallback
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.datamodules.segmentation import SegmentationDataModule
from medxfer.tasks import MultiLabelClassifier, Segmenter


def segmentation(data: Path) -> tuple[L.LightningDataModule, L.LightningModule, list]:
    """A U-Net and uneven evaluation batches of 3 on a Montgomery-layout folder."""
    dm = SegmentationDataModule(
        str(data),
        layout="montgomery",
        image_size=32,
        batch_size=4,
        eval_batch_size=3,
        num_workers=0,
        augment=False,
    )
    return dm, Segmenter(backbone="timm/test_resnet", num_classes=1, label_names=dm.label_names), []


def masks(data: Path, out: Path, devices: int) -> None:
    """Predict masks into a CSV logger's run folder and dump every PNG's foreground count."""
    from lightning.pytorch.loggers import CSVLogger
    from PIL import Image

    L.seed_everything(0)
    dm, model, _ = segmentation(data)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=CSVLogger(out.parent / f"logs{devices}"),
        callbacks=[MaskWriter()],  # keyed names: the key in a folder above both runs
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(model, dm, return_predictions=False)
    folder = Path(trainer.log_dir) / "predictions"  # a broadcast: every rank asks
    if trainer.is_global_zero:
        written = {
            str(f.relative_to(folder)): int((np.asarray(Image.open(f)) > 0).sum())
            for f in sorted(folder.rglob("*.png"))
        }
        out.write_text(json.dumps({"masks": written, "world_size": trainer.world_size}))


def main(data: Path, out: Path, devices: int, kind: str = "cxr") -> None:
    if kind == "masks":
        return masks(data, out, devices)
    L.seed_everything(0)
    if kind == "seg":
        dm, model, callbacks = segmentation(data)
    else:
        dm, model, callbacks = chest_xray(data)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(out.parent / f"run{devices}"),
    )
    logged: dict[str, float] = {}
    for results in (
        trainer.validate(model, dm, verbose=False),
        trainer.test(model, dm, verbose=False),
    ):
        for part in results:
            logged.update({k: float(v) for k, v in part.items()})
    sizes = {"val": len(dm.val_set), **{k: len(v) for k, v in dm.test_sets.items()}}
    if trainer.is_global_zero:
        out.write_text(
            json.dumps({"logged": logged, "sizes": sizes, "world_size": trainer.world_size})
        )


def chest_xray(data: Path) -> tuple[L.LightningDataModule, L.LightningModule, list]:
    """A multi-label classifier with the calibration and subgroup callbacks."""
    dm = ChestXrayDataModule(
        CXRTable(str(data / "chexpert/CheXpert-v1.0-synthetic/train.csv")),
        shifted={"nih": CXRTable(str(data / "nih/Data_Entry_2017_v2020.csv"), format="nih")},
        image_size=32,
        batch_size=4,
        eval_batch_size=5,
        num_workers=0,
    )
    model = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=5, label_names=dm.label_names
    )
    return dm, model, [CalibrationCallback(plot=False), SubgroupCallback(min_size=5)]


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
