"""Per-epoch training time with all analysis callbacks on vs off (a benchmark, not a test).

Synthetic CheXpert-format data are written to a temporary folder and the same seeded model is
trained for a few epochs with no analysis callback and with all five. Two ratios are printed:

* end to end: the best median epoch time with callbacks over the best without (interleaved
  repeats; on a busy 2-core machine this carries several percent of noise);
* attributed, in one run: the time spent inside the callbacks' hooks is measured directly, and
  the ratio is ``epoch / (epoch - hooks)`` -- insensitive to machine noise.

Per-fit work (the CKA probe at the start and end of fitting) is reported apart::

    python benchmarks/callback_overhead.py --patients 300 --image-size 64 --epochs 3

CKA and weight drift cost a fixed amount per epoch (a probe set, one pass over the weights), so
their share falls as the training set grows; the target is <= 1.05 at default settings.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import lightning as L

from medxfer.callbacks import (
    CalibrationCallback,
    CKACallback,
    ConvergenceCallback,
    SubgroupCallback,
    WeightDriftCallback,
)
from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable, write_synthetic_chexpert
from medxfer.tasks import MultiLabelClassifier

PER_FIT = {"on_fit_start", "on_fit_end", "setup", "teardown"}


class EpochTimer(L.Callback):
    """Time of each whole epoch (training, validation and every callback): wall time, or
    another ``clock`` (``time.process_time``: this process's CPU time)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.starts: list[float] = []
        self.clock = clock

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(self.clock())

    def on_fit_end(self, trainer, pl_module) -> None:
        self.starts.append(self.clock())

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def timed(callbacks: list[L.Callback], totals: dict[str, float], trainer_ref: list) -> None:
    """Wrap every hook of ``callbacks`` so its time is added to ``totals`` (after epoch 0)."""
    for cb in callbacks:
        for name in dir(type(cb)):
            if not (name.startswith("on_") or name in PER_FIT) or getattr(
                type(cb), name
            ) is getattr(L.Callback, name, None):
                continue
            hook, key = getattr(cb, name), f"{type(cb).__name__}.{name}"

            def wrapper(*a, _hook=hook, _key=key, **k):
                t0 = time.perf_counter()
                try:
                    return _hook(*a, **k)
                finally:
                    trainer = trainer_ref[0]
                    if trainer is not None and (
                        trainer.current_epoch > 0 or _key.split(".")[1] in PER_FIT
                    ):
                        totals[_key] += time.perf_counter() - t0

            setattr(cb, name, wrapper)


def run(
    args: argparse.Namespace, csv: Path, callbacks: list[L.Callback], root: Path
) -> tuple[float, dict[str, float]]:
    """Median epoch time after the first, and hook time per callback hook (summed)."""
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
    timer, totals, ref = EpochTimer(), defaultdict(float), [None]
    timed(callbacks, totals, ref)
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
    ref[0] = trainer
    trainer.fit(task, datamodule=dm)
    return statistics.median(timer.epochs()[1:]), dict(totals)


def analysis_callbacks() -> list[L.Callback]:
    return [
        CalibrationCallback(),
        SubgroupCallback(),
        CKACallback(),
        WeightDriftCallback(),
        ConvergenceCallback(),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="timm/resnet18")
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_synthetic_chexpert(
            Path(tmp) / "data", n_patients=args.patients, size=80, seed=0
        )
        run(args, csv, [], Path(tmp) / "warmup")  # fills the file cache; not counted
        off, on, hooks = [], [], {}
        for rep in range(args.repeats):  # interleaved: slow drifts of machine load hit both
            off.append(run(args, csv, [], Path(tmp) / f"off{rep}")[0])
            t, h = run(args, csv, analysis_callbacks(), Path(tmp) / f"on{rep}")
            on.append(t)
            hooks = h if not hooks or t <= min(on) else hooks
    n_epochs = args.epochs - 1
    per_epoch = {k: v / n_epochs for k, v in hooks.items() if k.split(".")[1] not in PER_FIT}
    per_fit = {k: v for k, v in hooks.items() if k.split(".")[1] in PER_FIT}
    t_on, t_off, in_hooks = min(on), min(off), sum(per_epoch.values())
    print(
        f"backbone {args.backbone}, {args.image_size} px, {args.patients} patients, {args.epochs} epochs, best of {args.repeats}"
    )
    print(f"epoch without callbacks   {t_off:7.2f} s")
    print(f"epoch with all five       {t_on:7.2f} s   end-to-end ratio {t_on / t_off:.3f}")
    print(
        f"time in callback hooks    {in_hooks:7.3f} s/epoch   attributed ratio {t_on / (t_on - in_hooks):.3f}"
    )
    by_callback: dict[str, float] = defaultdict(float)
    for k, v in per_epoch.items():
        by_callback[k.split(".")[0]] += v
    for name, v in sorted(by_callback.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {v:7.3f} s/epoch  ({100 * v / t_on:.1f} % of an epoch)")
    print(f"once per fit (CKA at start and end, drift snapshot): {sum(per_fit.values()):.2f} s")


if __name__ == "__main__":
    main()
