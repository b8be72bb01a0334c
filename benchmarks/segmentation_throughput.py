"""Training images/s of medxfer's U-Net (``Segmenter``) through Lightning vs a plain PyTorch loop
on the same U-Net, data, batch and optimiser (a benchmark, not a test)::

    python benchmarks/segmentation_throughput.py                # CPU: resnet18 U-Net, 64 px
    python benchmarks/segmentation_throughput.py --backbone resnet50 --image-size 224 \\
        --batch-size 16 --images 400                            # one GPU

Synthetic radiographs in the Montgomery layout are cached once with their masks (``build_cache``,
as ``medxfer prepare``), and two runs train the same seeded :class:`Segmenter` from the same
:class:`SegmentationDataModule` loaders, interleaved over ``--repeats`` (the loops, the timing and
the interleaving are :mod:`training_throughput`'s):

* plain: forward, the task's Dice + cross-entropy (``batch_loss``), backward, Adam and the
  cosine schedule; per epoch a validation pass feeding the same Dice / IoU metric and a
  ``torch.save``;
* medxfer: ``Trainer.fit`` as ``medxfer fit`` runs it (CSV logger, checkpointing, validation
  every epoch).

Printed: images/s of each and medxfer / plain (target >= 0.95). On a shared CPU, other
processes' load swings wall time by tens of percent between epochs; ``--cpu-time`` (with
``--workers 0 --threads 1``: every step in this process, no spinning threads) times each epoch
by this process's CPU time instead, which measures the work each loop does.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch

# the loops, their timing and the interleaving of the classification benchmark beside this file
from training_throughput import (
    device_name,
    interleaved,
    loop_arguments,
    loop_clock,
    medxfer_epoch,
    plain_epoch,
)

from medxfer.datamodules import MedxferDataModule
from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_montgomery
from medxfer.tasks import Segmenter


def datamodule(args: argparse.Namespace, root: Path, cache: Path) -> SegmentationDataModule:
    return SegmentationDataModule(
        str(root),
        layout="montgomery",
        name="montgomery",
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        cache=str(cache),
    )


def task(args: argparse.Namespace, dm: MedxferDataModule, channels_last: bool) -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(
        backbone=args.backbone,
        num_classes=dm.num_classes,
        label_names=dm.label_names,
        in_chans=dm.channels,
        decoder_channels=tuple(args.decoder_channels),
        optimizer="adam",
        lr=0.003,
        schedule="cosine",
        channels_last=channels_last,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # an epoch of the default data is ~1.4 s: the median of 5 is steadier than of 2
    loop_arguments(p, batch_size=16, epochs=6)
    p.add_argument("--decoder-channels", type=int, nargs="+", default=[128, 64, 32, 16, 8])
    p.add_argument("--images", type=int, default=160)
    args = p.parse_args()
    if args.cpu_time and (args.workers != 0 or torch.cuda.is_available()):
        p.error("--cpu-time measures a CPU run with --workers 0 (all work in this process)")
    clock = loop_clock(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_synthetic_montgomery(root / "data", args.images, size=96, seed=0)
        cache = root / "cache.h5"
        dm = datamodule(args, data, cache)
        dm.build_cache(cache, progress=False)
        dm.setup("fit")
        n_train = len(dm.train_set)
        make_data = partial(datamodule, args, data, cache)

        def make_task(dm: MedxferDataModule, channels_last: bool) -> Segmenter:
            return task(args, dm, channels_last)

        best = interleaved(
            {
                "plain": lambda r: plain_epoch(
                    make_data,
                    make_task,
                    root,
                    args.epochs,
                    args.precision,
                    args.channels_last,
                    clock,
                ),
                "medxfer": lambda r: medxfer_epoch(
                    make_data,
                    make_task,
                    root / f"m{r}",
                    args.epochs,
                    args.precision,
                    args.channels_last,
                    [],
                    clock,
                ),
            },
            args.repeats,
        )
    print(
        f"{device_name()}; U-Net on {args.backbone}, decoder {args.decoder_channels}, "
        f"{args.image_size} px, batch {args.batch_size}, {args.precision}"
        f"{' channels_last' if args.channels_last else ''}, {n_train} training images per "
        f"epoch, {dm.num_workers} worker(s), best of {args.repeats}, "
        f"{'process CPU' if args.cpu_time else 'wall'} time"
    )
    for name, seconds in best.items():
        print(f"{name:10} {n_train / seconds:8.1f} img/s   {seconds:6.2f} s/epoch")
    print(f"medxfer / plain  {best['plain'] / best['medxfer']:.3f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
