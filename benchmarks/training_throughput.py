"""Training images/s through medxfer's Lightning loop vs a plain PyTorch loop on the same model,
data and precision, and with all analysis callbacks on (a benchmark, not a test)::

    python benchmarks/training_throughput.py                         # CPU: resnet18, 64 px
    python benchmarks/training_throughput.py --backbone bit-r50x1 --image-size 224 \\
        --batch-size 64 --precision bf16-mixed --channels-last --precisions   # one GPU

Synthetic CheXpert-format images are cached once (``build_cache``, as ``medxfer prepare``), and three runs train the
same seeded :class:`MultiLabelClassifier` from the same :class:`ChestXrayDataModule` loaders:

* plain: a hand-written loop -- forward, the task's loss, backward, the task's optimiser and
  schedule; per epoch a validation pass computing the same AUROC metric and a ``torch.save``;
* medxfer: ``Trainer.fit`` as ``medxfer fit`` runs it (CSV logger, checkpointing with
  medxfer's checkpoint writer, validation every epoch), no analysis callback;
* medxfer + callbacks: the same with calibration, subgroup, CKA, weight-drift and convergence
  callbacks.

Each epoch is timed from its start to the next (training, validation, checkpoint), by the
wall clock and by the CPU time of the process (all threads; on a CPU machine shared with other
jobs the wall clock measures the neighbours as much as the loop, the CPU time much less); the
first epoch (start-up, cudnn autotuning) is not counted; runs are interleaved over ``--repeats``
and the fastest median epoch of each is used, so machine noise hurts every run alike. Targets:
medxfer / plain >= 0.95 at the default 13 training batches per epoch (``--patients 150``) and
>= 0.98 at 200 (e.g. ``--patients 600 --batch-size 8 --source-size 80``); with callbacks >= 0.90.
``--skip-callbacks`` leaves out the run with callbacks. ``--precisions`` (GPU) adds float32 vs
bf16-mixed vs bf16-mixed with channels_last through medxfer.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

# the same epoch timer and callback set as the callback-overhead benchmark beside this file
from callback_overhead import EpochTimer, analysis_callbacks
from lightning.pytorch.loggers import CSVLogger

from medxfer.checkpointing import use_local_checkpoint_io
from medxfer.datamodules import ChestXrayDataModule, CXRTable, write_synthetic_chexpert
from medxfer.tasks import MultiLabelClassifier


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
    args: argparse.Namespace,
    csv: Path,
    cache: Path,
    root: Path,
    precision: str,
    channels_last: bool,
    callbacks: list[L.Callback],
) -> tuple[float, float]:
    """Median wall and CPU seconds per epoch of ``Trainer.fit``."""
    L.seed_everything(0, verbose=False)
    dm = datamodule(args, csv, cache)
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=precision,
        max_epochs=args.epochs,
        logger=CSVLogger(root),
        callbacks=[timer, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    use_local_checkpoint_io(trainer)  # as medxfer fit (MedxferCLI.instantiate_trainer)
    trainer.fit(task(args, dm, channels_last), datamodule=dm)
    # not epoch 0 (start-up)
    return statistics.median(timer.epochs()[1:]), statistics.median(timer.cpu_epochs()[1:])


def plain_epoch(
    args: argparse.Namespace, csv: Path, cache: Path, root: Path
) -> tuple[float, float]:
    """Median wall and CPU seconds per epoch of a hand-written loop doing the same work."""
    L.seed_everything(0, verbose=False)
    dm = datamodule(args, csv, cache)
    dm.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = task(args, dm, args.channels_last).to(device)
    optim = model.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    metric = model.make_metrics().to(device)
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    bf16 = args.precision.startswith("bf16")
    marks, cpu_marks = [], []
    for _ in range(args.epochs):
        _sync()
        marks.append(time.perf_counter())
        cpu_marks.append(time.process_time())
        model.train()
        for batch in train_loader:
            image = batch["image"].to(device, non_blocking=True)
            target = batch["target"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model({"image": image})
            loss = model.loss(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            for batch in val_loader:
                image = batch["image"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model({"image": image})
                metric.update(model.probabilities(logits.float()), batch["target"].to(device))
            metric.compute()
            metric.reset()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, root / "plain.pt")
    _sync()
    marks.append(time.perf_counter())
    cpu_marks.append(time.process_time())
    return tuple(  # not epoch 0
        statistics.median(b - a for a, b in itertools.pairwise(m[1:])) for m in (marks, cpu_marks)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="timm/resnet18")
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument(
        "--source-size", type=int, default=256, help="side of the synthetic JPEGs written"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4, help="the first is not counted")
    p.add_argument("--workers", type=int, default=None, help="default: the datamodule's")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--precisions", action="store_true", help="GPU: fp32 / bf16 / bf16+NHWC")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the loop")
    p.add_argument("--skip-callbacks", action="store_true", help="no run with callbacks")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = write_synthetic_chexpert(root / "data", args.patients, size=args.source_size, seed=0)
        cache = root / "cache.h5"
        dm = datamodule(args, csv, cache)
        dm.build_cache(cache, progress=False)
        dm.setup("fit")
        n_train = len(dm.train_set)
        n_batches = len(dm.train_dataloader())
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}

        def keep(name: str, seconds: tuple[float, float]) -> None:
            best[name] = min(best.get(name, float("inf")), seconds[0])
            best_cpu[name] = min(best_cpu.get(name, float("inf")), seconds[1])

        for r in range(args.repeats):
            keep("plain", plain_epoch(args, csv, cache, root))
            keep(
                "medxfer",
                medxfer_epoch(
                    args, csv, cache, root / f"m{r}", args.precision, args.channels_last, []
                ),
            )
            if not args.skip_callbacks:
                keep(
                    "medxfer + callbacks",
                    medxfer_epoch(
                        args,
                        csv,
                        cache,
                        root / f"c{r}",
                        args.precision,
                        args.channels_last,
                        analysis_callbacks(),
                    ),
                )
            if args.precisions and torch.cuda.is_available():
                keep(
                    "fp32 NCHW",
                    medxfer_epoch(args, csv, cache, root / f"f{r}", "32-true", False, []),
                )
                keep(
                    "bf16-mixed NCHW",
                    medxfer_epoch(args, csv, cache, root / f"b{r}", "bf16-mixed", False, []),
                )
                keep(
                    "bf16-mixed NHWC",
                    medxfer_epoch(args, csv, cache, root / f"n{r}", "bf16-mixed", True, []),
                )
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"{device}; {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
        f"{args.precision}{' channels_last' if args.channels_last else ''}, {n_train} training "
        f"images ({n_batches} batches) per epoch, {dm.num_workers} worker(s), "
        f"best of {args.repeats}"
    )
    print(f"{'':22} {'img/s':>8} {'s/epoch':>8} {'CPU s/epoch':>12}")
    for name, seconds in best.items():
        print(f"{name:22} {n_train / seconds:8.1f} {seconds:8.2f} {best_cpu[name]:12.2f}")
    print(f"{'':28} {'wall':>6} {'CPU':>6}")
    targets = {"medxfer": 0.98 if n_batches >= 200 else 0.95, "medxfer + callbacks": 0.90}
    for name, target in targets.items():
        if name in best:
            print(
                f"{name + ' / plain':28} {best['plain'] / best[name]:6.3f} "
                f"{best_cpu['plain'] / best_cpu[name]:6.3f}   (target >= {target})"
            )
    if "fp32 NCHW" in best:
        print(f"bf16 / fp32                  {best['fp32 NCHW'] / best['bf16-mixed NCHW']:.2f}")
        print(
            f"NHWC / NCHW (bf16)           {best['bf16-mixed NCHW'] / best['bf16-mixed NHWC']:.2f}"
        )


if __name__ == "__main__":
    main()
