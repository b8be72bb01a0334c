"""Training images/s through medxfer's Lightning loop vs a plain PyTorch loop on the same model,
data and precision, and with all analysis callbacks on (a benchmark, not a test)::

    python benchmarks/training_throughput.py                         # CPU: resnet18, 64 px
    python benchmarks/training_throughput.py --backbone bit-r50x1 --image-size 224 \\
        --batch-size 64 --precision bf16-mixed --channels-last --precisions   # one GPU

Synthetic CheXpert-format images are cached once (``build_cache``, as ``medxfer prepare``), and three runs train the
same seeded :class:`MultiLabelClassifier` from the same :class:`ChestXrayDataModule` loaders:

* plain: a hand-written loop -- the task's input normalisation of the uint8 batch on the device
  (``normalize_image``), forward, the task's loss, backward, the task's optimiser and schedule;
  per epoch a validation pass computing the same AUROC metric and a ``torch.save``;
* medxfer: ``Trainer.fit`` as ``medxfer fit`` runs it (CSV logger, checkpointing, validation
  every epoch), no analysis callback;
* medxfer + callbacks: the same with calibration, subgroup, CKA, weight-drift and convergence
  callbacks.

Each epoch is timed from its start to the next (training, validation, checkpoint); the first
epoch (start-up, cudnn autotuning) is not counted; runs are interleaved over ``--repeats`` and
the fastest median epoch of each is used, so machine noise hurts every run alike. Targets:
medxfer / plain >= 0.95; with callbacks >= 0.90. ``--precisions`` (GPU) adds float32 vs
bf16-mixed vs bf16-mixed with channels_last through medxfer.

The two loops (:func:`medxfer_epoch`, :func:`plain_epoch`) and the interleaving
(:func:`interleaved`) take any task and datamodule factory: ``segmentation_throughput.py``
beside this file runs them on the U-Net.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

# the same epoch timer and callback set as the callback-overhead benchmark beside this file
from callback_overhead import EpochTimer, analysis_callbacks
from lightning.pytorch.loggers import CSVLogger

from medxfer.checkpointing import use_local_checkpoint_io
from medxfer.datamodules import MedxferDataModule
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable, write_synthetic_chexpert
from medxfer.tasks import MultiLabelClassifier, TransferTask

#: A fresh datamodule, and a fresh seeded task for it (``channels_last`` as asked).
MakeData = Callable[[], MedxferDataModule]
MakeTask = Callable[[MedxferDataModule, bool], TransferTask]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def datamodule(args: argparse.Namespace, csv: Path, cache: Path) -> ChestXrayDataModule:
    return ChestXrayDataModule(
        CXRTable(str(csv)),
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        cache=str(cache),
    )


def task(
    args: argparse.Namespace, dm: ChestXrayDataModule, channels_last: bool
) -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier(
        backbone=args.backbone,
        num_classes=dm.num_classes,
        label_names=dm.label_names,
        lr=0.003,
        channels_last=channels_last,
    )


def medxfer_epoch(
    make_data: MakeData,
    make_task: MakeTask,
    root: Path,
    epochs: int,
    precision: str,
    channels_last: bool,
    callbacks: list[L.Callback],
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median seconds per epoch of ``Trainer.fit`` (by ``clock``)."""
    L.seed_everything(0, verbose=False)
    dm = make_data()
    timer = EpochTimer(clock)
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=precision,
        max_epochs=epochs,
        logger=CSVLogger(root),
        callbacks=[timer, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    use_local_checkpoint_io(trainer)  # as medxfer fit (MedxferCLI.instantiate_trainer)
    trainer.fit(make_task(dm, channels_last), datamodule=dm)
    return statistics.median(timer.epochs()[1:])  # not epoch 0 (start-up)


def _to(batch: dict[str, Any], device: torch.device, model: TransferTask) -> dict[str, Any]:
    """The batch's tensors on ``device`` (ids and groups as they are), its uint8 images
    normalised there by the task (what ``on_after_batch_transfer`` does in ``Trainer.fit``)."""
    out = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
    out["image"] = model.normalize_image(out["image"], out.get("mask"))
    return out


def plain_epoch(
    make_data: MakeData,
    make_task: MakeTask,
    root: Path,
    epochs: int,
    precision: str,
    channels_last: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median seconds per epoch (by ``clock``) of a hand-written loop doing the same work:
    the task's input normalisation on the device, forward, the task's loss (``batch_loss``),
    backward, the task's optimiser and schedule; per epoch a validation pass feeding the task's
    metric (``update_metrics``) and a ``torch.save``."""
    L.seed_everything(0, verbose=False)
    dm = make_data()
    dm.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = make_task(dm, channels_last).to(device)
    optim = model.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    metric = model.make_metrics().to(device)
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    bf16 = precision.startswith("bf16")
    marks = []
    for _ in range(epochs):
        _sync()
        marks.append(clock())
        model.train()
        for batch in train_loader:
            batch = _to(batch, device, model)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch)
            loss = model.batch_loss(logits.float(), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            for batch in val_loader:
                batch = _to(batch, device, model)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(batch)
                model.update_metrics(metric, model.probabilities(logits.float()), batch)
            metric.compute()
            metric.reset()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, root / "plain.pt")
    _sync()
    marks.append(clock())
    return statistics.median(b - a for a, b in itertools.pairwise(marks[1:]))  # not epoch 0


def interleaved(runs: dict[str, Callable[[int], float]], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` rounds of every run (each called with the round's index), the
    runs taking turns within a round, so machine noise hurts every run alike."""
    best: dict[str, float] = {}
    for r in range(repeats):
        for name, run in runs.items():
            best[name] = min(best.get(name, float("inf")), run(r))
    return best


def device_name() -> str:
    """The accelerator, or the CPU with the loop's threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def loop_arguments(p: argparse.ArgumentParser, batch_size: int, epochs: int) -> None:
    """The options of both training benchmarks (this one and ``segmentation_throughput.py``):
    model, image size, batch, epochs, loader workers, repeats, precision, memory format, CPU
    threads and the clock."""
    p.add_argument("--backbone", default="timm/resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--epochs", type=int, default=epochs, help="the first is not counted")
    p.add_argument("--workers", type=int, default=None, help="default: the datamodule's")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the loop")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time epochs by this process's CPU time (a machine shared with other work)",
    )


def loop_clock(args: argparse.Namespace) -> Callable[[], float]:
    """The epoch clock of :func:`loop_arguments`' options, after setting the loop's CPU threads
    and cudnn autotuning on a GPU."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    return time.process_time if args.cpu_time else time.perf_counter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_arguments(p, batch_size=32, epochs=4)
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--precisions", action="store_true", help="GPU: fp32 / bf16 / bf16+NHWC")
    p.add_argument(
        "--source-size", type=int, default=256, help="side of the synthetic JPEGs written"
    )
    p.add_argument("--skip-callbacks", action="store_true", help="no run with callbacks")
    args = p.parse_args()
    clock = loop_clock(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = write_synthetic_chexpert(root / "data", args.patients, size=args.source_size, seed=0)
        cache = root / "cache.h5"
        dm = datamodule(args, csv, cache)
        dm.build_cache(cache, progress=False)
        dm.setup("fit")
        n_train = len(dm.train_set)
        n_batches = len(dm.train_dataloader())
        make_data = partial(datamodule, args, csv, cache)

        def make_task(dm: MedxferDataModule, channels_last: bool) -> TransferTask:
            return task(args, dm, channels_last)  # type: ignore[arg-type]

        def fit(name: str, precision: str, channels_last: bool, callbacks: Any = list) -> Any:
            return lambda r: medxfer_epoch(
                make_data,
                make_task,
                root / f"{name}{r}",
                args.epochs,
                precision,
                channels_last,
                callbacks(),
                clock,
            )

        runs = {
            "plain": lambda r: plain_epoch(
                make_data, make_task, root, args.epochs, args.precision, args.channels_last, clock
            ),
            "medxfer": fit("m", args.precision, args.channels_last),
        }
        if not args.skip_callbacks:
            runs["medxfer + callbacks"] = fit(
                "c", args.precision, args.channels_last, analysis_callbacks
            )
        if args.precisions and torch.cuda.is_available():
            runs["fp32 NCHW"] = fit("f", "32-true", False)
            runs["bf16-mixed NCHW"] = fit("b", "bf16-mixed", False)
            runs["bf16-mixed NHWC"] = fit("n", "bf16-mixed", True)
        best = interleaved(runs, args.repeats)
    device = device_name()
    print(
        f"{device}; {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
        f"{args.precision}{' channels_last' if args.channels_last else ''}, {n_train} training "
        f"images ({n_batches} batches) per epoch, {dm.num_workers} worker(s), best of "
        f"{args.repeats}, {'CPU' if args.cpu_time else 'wall'} time"
    )
    for name, seconds in best.items():
        print(f"{name:22} {n_train / seconds:8.1f} img/s   {seconds:6.2f} s/epoch")
    plain = best["plain"]
    target = 0.98 if n_batches >= 200 else 0.95
    print(f"medxfer / plain              {plain / best['medxfer']:.3f}   (target >= {target})")
    if "medxfer + callbacks" in best:
        ratio = plain / best["medxfer + callbacks"]
        print(f"medxfer + callbacks / plain  {ratio:.3f}   (target >= 0.90)")
    if "fp32 NCHW" in best:
        print(f"bf16 / fp32                  {best['fp32 NCHW'] / best['bf16-mixed NCHW']:.2f}")
        print(
            f"NHWC / NCHW (bf16)           {best['bf16-mixed NCHW'] / best['bf16-mixed NHWC']:.2f}"
        )


if __name__ == "__main__":
    main()
