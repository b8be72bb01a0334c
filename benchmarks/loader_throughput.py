"""Loader images/s from the HDF5 cache vs decoding the JPEG / PNG files, at 224 and 512 px (a
benchmark, not a test; ratios are measured in one run)::

    python benchmarks/loader_throughput.py --images 160 --source-size 1024

Synthetic chest X-rays are written at ``--source-size`` in both real layouts (CheXpert: JPEG,
NIH ChestX-ray14: PNG, whose real images are 1024²), a cache is prepared for each resolution
with the datamodule's ``build_cache`` (what ``medxfer prepare`` runs) (its one-off time is printed), and the training loader
of the same :class:`ChestXrayDataModule` -- augmentation on, the datamodule's default workers
unless ``--workers`` -- is iterated over the whole training split with and without ``cache``.
The first batch (worker start-up) is not counted. Batches hold uint8 images (the task
normalises them on the device), so the loader moves a quarter of float32's bytes. Target:
cache >= 5x the files at 512 px for JPEG (and at 224 px).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medxfer.datamodules.chest_xray import (
    ChestXrayDataModule,
    CXRTable,
    write_synthetic_chexpert,
    write_synthetic_nih,
)


def images_per_second(dm: ChestXrayDataModule, epochs: int) -> float:
    """Images/s of full passes over the training loader, after its first batch."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    count, elapsed = 0, 0.0
    for _ in range(epochs):
        it = iter(loader)
        next(it)  # worker start-up (persistent workers: only the first epoch pays it)
        t0 = time.perf_counter()
        for batch in it:
            count += len(batch["id"])
        elapsed += time.perf_counter() - t0
    if not count:
        raise SystemExit("too few images for more than one batch per pass: raise --images")
    return count / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=160, help="about this many per format")
    p.add_argument("--source-size", type=int, default=1024)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="default: the datamodule's")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        tables = {
            "JPEG (CheXpert layout)": CXRTable(
                str(
                    write_synthetic_chexpert(
                        root / "chexpert", args.images // 2, size=args.source_size, seed=0
                    )
                )
            ),
            "PNG (NIH layout)": CXRTable(
                str(
                    write_synthetic_nih(
                        root / "nih", args.images // 3, size=args.source_size, seed=1
                    )
                ),
                format="nih",
            ),
        }
        print(f"wrote the sources in {time.perf_counter() - t0:.0f} s")
        rows = []
        for label, table in tables.items():
            for size in args.sizes:

                def datamodule(cache: str | None, _table=table, _size=size) -> ChestXrayDataModule:
                    return ChestXrayDataModule(
                        _table,
                        image_size=_size,
                        batch_size=args.batch_size,
                        num_workers=args.workers,
                        cache=cache,
                    )

                dm = datamodule(None)
                cache = root / f"{label.split()[0]}_{size}.h5"
                t0 = time.perf_counter()
                report = dm.build_cache(cache, progress=False)
                prepare_s = time.perf_counter() - t0
                files = images_per_second(dm, args.epochs)
                cached = images_per_second(datamodule(str(cache)), args.epochs)
                rows.append((label, size, report.total, prepare_s, files, cached))
        workers = datamodule(None).num_workers
        print(
            f"{args.source_size}² sources, batch {args.batch_size}, {workers} worker(s), "
            "training loader (augmentation on)"
        )
        print(
            f"{'source':24} {'px':>4} {'images':>6} {'prepare s':>9} {'files/s':>8} {'cache/s':>8} {'ratio':>6}"
        )
        for label, size, n, prep, files, cached in rows:
            print(
                f"{label:24} {size:4d} {n:6d} {prep:9.1f} {files:8.1f} {cached:8.1f} {cached / files:5.1f}x"
            )
        jpeg = [cached / files for label, size, _, _, files, cached in rows if size == 512]
        if jpeg:
            print(f"target: cache / files >= 5x at 512 px JPEG: {jpeg[0]:.1f}x")


if __name__ == "__main__":
    main()
