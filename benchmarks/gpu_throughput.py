"""Training throughput of a medxfer task on one GPU: float32 vs bf16-mixed vs bf16-mixed with
channels_last, and medxfer's Lightning loop vs a plain PyTorch loop on the same model and data.

Prints images/s and the ratios measured in one run (not a test). Data are in-memory tensors, so
the figures are the model's speed, not the loader's::

    python benchmarks/gpu_throughput.py --backbone bit-r50x1 --image-size 224 --batch-size 64
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from medxfer.tasks import MultiLabelClassifier


class _Fixed(Dataset):
    def __init__(self, n: int, size: int, k: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.targets = (torch.rand(n, k, generator=g) < 0.3).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "target": self.targets[i], "id": str(i)}


def _loader(data: Dataset, batch_size: int) -> DataLoader:
    """The same loader for both loops: shuffled, 4 workers, pinned memory, full batches."""
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        num_workers=4,
        pin_memory=True,
        persistent_workers=True,
        drop_last=True,
    )


def _task(args: argparse.Namespace, channels_last: bool) -> MultiLabelClassifier:
    return MultiLabelClassifier(
        backbone=args.backbone, num_classes=5, channels_last=channels_last, lr=0.003
    )


def lightning_rate(args: argparse.Namespace, precision: str, channels_last: bool) -> float:
    """Images/s of `Trainer.fit`, from the time difference of a short and a long run."""
    data = _Fixed(args.batch_size * 8, args.image_size, 5)
    times = []
    for steps in (args.warmup, args.warmup + args.steps):
        torch.manual_seed(0)
        task = _task(args, channels_last)
        loader = _loader(data, args.batch_size)
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            precision=precision,
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit(task, loader)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return args.steps * args.batch_size / (times[1] - times[0])


def plain_rate(args: argparse.Namespace, channels_last: bool) -> float:
    """Images/s of a hand-written loop: same model, loss, optimiser, bf16 autocast, data."""
    data = _Fixed(args.batch_size * 8, args.image_size, 5)
    loader = _loader(data, args.batch_size)
    task = _task(args, channels_last).cuda().train()
    opt = torch.optim.SGD(task.parameters(), lr=0.003, momentum=0.9)
    step, t0 = 0, 0.0
    while step < args.warmup + args.steps:
        for batch in loader:
            if step == args.warmup:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            if step == args.warmup + args.steps:
                break
            image = batch["image"].cuda(non_blocking=True)
            target = batch["target"].cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = task({"image": image})
            loss = task.loss(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="bit-r50x1")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    fp32 = lightning_rate(args, "32-true", False)
    bf16 = lightning_rate(args, "bf16-mixed", False)
    bf16_cl = lightning_rate(args, "bf16-mixed", True)
    plain = plain_rate(args, True)
    print(
        f"device: {torch.cuda.get_device_name()}  backbone {args.backbone}  {args.image_size} px  batch {args.batch_size}"
    )
    print(f"fp32 NCHW            {fp32:8.1f} img/s")
    print(f"bf16-mixed NCHW      {bf16:8.1f} img/s   x{bf16 / fp32:.2f} vs fp32")
    print(f"bf16-mixed NHWC      {bf16_cl:8.1f} img/s   x{bf16_cl / bf16:.2f} vs bf16 NCHW")
    print(f"plain loop bf16 NHWC {plain:8.1f} img/s   medxfer/plain = {bf16_cl / plain:.3f}")


if __name__ == "__main__":
    main()
