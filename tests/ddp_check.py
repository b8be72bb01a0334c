"""Evaluate one seeded model on 1 process or on N DDP ranks and dump what was logged.

Run as a script (Lightning's DDP launcher re-executes it once per rank)::

    python tests/ddp_check.py DATA_DIR OUT.json DEVICES
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from medxfer.callbacks import CalibrationCallback, SubgroupCallback
from medxfer.datamodules import ChestXrayDataModule, CXRTable
from medxfer.tasks import MultiLabelClassifier


def main(data: Path, out: Path, devices: int) -> None:
    L.seed_everything(0)
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
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=[CalibrationCallback(plot=False), SubgroupCallback(min_size=5)],
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


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
