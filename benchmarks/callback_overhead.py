"""Per-epoch training time with all analysis callbacks on vs off, in one run (not a test).

Synthetic CheXpert-format data are written to a temporary folder; the same seeded model is
trained for a few epochs without callbacks, with each callback alone and with all of them, and
the median epoch time (training + validation, after the first epoch) is compared::

    python benchmarks/callback_overhead.py --patients 400 --image-size 64 --epochs 3

The overhead of CKA and weight drift is fixed per epoch (a probe set, one pass over the
weights), so the ratio falls as epochs grow; the target is <= 1.05 at default settings.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from medxfer.callbacks import (
    CalibrationCallback,
    CKACallback,
    ConvergenceCallback,
    SubgroupCallback,
    WeightDriftCallback,
)
from medxfer.datamodules import ChestXrayDataModule, CXRTable, write_synthetic_chexpert
from medxfer.tasks import MultiLabelClassifier


class EpochTimer(L.Callback):
    """Wall time of each whole epoch (training, validation and every other callback)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def epoch_time(
    args: argparse.Namespace, csv: Path, callbacks: list[L.Callback], root: Path
) -> float:
    L.seed_everything(0)
    dm = ChestXrayDataModule(
        CXRTable(str(csv)),
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    task = MultiLabelClassifier(
        backbone=args.backbone, num_classes=5, label_names=dm.label_names, lr=0.01
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*callbacks, timer],
        default_root_dir=root,
    )
    trainer.fit(task, datamodule=dm)
    return statistics.median(timer.epochs()[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="timm/resnet18")
    p.add_argument("--patients", type=int, default=400)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_synthetic_chexpert(
            Path(tmp) / "data", n_patients=args.patients, size=80, seed=0
        )
        runs = {
            "off": list,
            "calibration+subgroups+convergence": lambda: [
                CalibrationCallback(),
                SubgroupCallback(),
                ConvergenceCallback(),
            ],
            "cka": lambda: [CKACallback()],
            "weight drift": lambda: [WeightDriftCallback()],
            "all": lambda: [
                CalibrationCallback(),
                SubgroupCallback(),
                CKACallback(),
                WeightDriftCallback(),
                ConvergenceCallback(),
            ],
        }
        epoch_time(args, csv, [], Path(tmp) / "warmup")  # fills the file cache; not counted
        times: dict[str, float] = {}
        for rep in range(args.repeats):  # interleaved, best of repeats: robust to load drift
            for name, make in runs.items():
                t = epoch_time(args, csv, make(), Path(tmp) / f"{name}{rep}")
                times[name] = min(times.get(name, t), t)
    print(
        f"backbone {args.backbone}, {args.image_size} px, {args.patients} patients, median epoch after the first"
    )
    for name, t in times.items():
        print(f"{name:<34} {t:7.2f} s/epoch   ratio {t / times['off']:.3f}")


if __name__ == "__main__":
    main()
