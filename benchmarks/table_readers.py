"""Time of medxfer's chest X-ray table readers against plain ``pandas.read_csv`` of the same
file, at the real tables' size, in one run (a benchmark, not a test)::

    python benchmarks/table_readers.py               # add --gzip for the .csv.gz of each table

Tables with the real headers are generated in a temporary folder: CheXpert ``train.csv``
(223,414 rows, ``Path,Sex,Age,Frontal/Lateral,AP/PA`` and the 14 observations, blanks and
-1.0 mixed in as in the real file) and NIH ChestX-ray14 ``Data_Entry_2017_v2020.csv``
(112,120 rows, the header whose ``OriginalImage[Width,Height]`` and
``OriginalImagePixelSpacing[x,y]`` hold commas). Each reader and ``pandas.read_csv`` (default
arguments) read each file ``--repeats`` times (15), taking turns; printed for wall and for CPU
time of the process (all threads): the best time of each, their ratio, and the median of the
ratios of the rounds (each round's two calls see the same load, so on a shared machine the
median moves less than the best times do). Expectation: about 2.5x ``read_csv`` (the
readers are plain pandas over :func:`medxfer.data.tables.read_table`; the earlier <= 2x target
was withdrawn, see docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medxfer.datamodules.chest_xray import (
    CHEXPERT_LABELS,
    NIH_FINDINGS,
    read_chexpert_csv,
    read_nih_csv,
)

#: The header of the real ``Data_Entry_2017_v2020.csv`` (as in ../shared/data).
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS)


def write_chexpert(path: Path, rows: int, seed: int = 0) -> None:
    """A CheXpert ``train.csv`` of ``rows`` rows: ~3.5 images per patient, 15 % lateral,
    the AP / PA / LL / RL tags and the label value mix of the real file."""
    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(1, rows // 3.5 + 2, rows))
    # each image its own study (the reader refuses an image listed twice): the image's running
    # number within its patient (patients are sorted)
    first = np.searchsorted(patient, patient)
    study = np.arange(rows) - first + 1
    lateral = rng.random(rows) < 0.145
    view = np.where(lateral, "view2_lateral", "view1_frontal")
    sex = rng.choice(["Male", "Female", "Unknown"], rows, p=[0.59, 0.40999, 0.00001])
    age = rng.integers(18, 91, rows)
    ap = np.where(
        lateral, "", rng.choice(["AP", "PA", "LL", "RL"], rows, p=[0.8457, 0.1542, 8e-5, 2e-5])
    )
    lines = [CHEXPERT_HEADER]
    values = np.array(["", "1.0", "0.0", "-1.0"])
    labels = values[rng.choice(4, (rows, len(CHEXPERT_LABELS)), p=[0.7, 0.15, 0.1, 0.05])]
    for i in range(rows):
        lines.append(
            f"CheXpert-v1.0/train/patient{patient[i]:05d}/study{study[i]}/{view[i]}.jpg,"
            f"{sex[i]},{age[i]},{'Lateral' if lateral[i] else 'Frontal'},{ap[i]},"
            + ",".join(labels[i])
        )
    path.write_text("\n".join(lines) + "\n")


def write_nih(path: Path, rows: int, seed: int = 0) -> None:
    """A ``Data_Entry_2017_v2020.csv`` of ``rows`` rows sorted by ``Image Index`` as the real
    one: ~3.6 images per patient, 1-3 findings in alphabetical order joined by ``|`` (or
    ``No Finding``), ages, sexes, PA / AP, sizes and spacings."""
    rng = np.random.default_rng(seed)
    findings = [f for f in NIH_FINDINGS if f != "No Finding"]
    patient = np.sort(rng.integers(1, rows // 3.6 + 2, rows))
    lines = [NIH_HEADER]
    follow_up = 0
    for i in range(rows):
        follow_up = follow_up + 1 if i and patient[i] == patient[i - 1] else 0
        k = rng.choice(4, p=[0.54, 0.3, 0.11, 0.05])
        # sorted, as in the real file (every multi-finding row of ../shared/data's is)
        labels = "|".join(sorted(rng.choice(findings, k, replace=False))) if k else "No Finding"
        lines.append(
            f"{patient[i]:08d}_{follow_up:03d}.png,{labels},{follow_up},{patient[i]},"
            f"{rng.integers(1, 96)},{'M' if rng.random() < 0.56 else 'F'},"
            f"{'PA' if rng.random() < 0.6 else 'AP'},2500,2048,0.143,0.143"
        )
    path.write_text("\n".join(lines) + "\n")


def timings(fns: list[Callable[[], object]], repeats: int) -> np.ndarray:
    """Wall and CPU seconds of ``repeats`` calls of each of ``fns``, shape
    ``(repeats, len(fns), 2)``. The functions take turns, so that both sides of a ratio see
    the same load; as in timeit, garbage is collected before a call and not during it."""
    out = np.empty((repeats, len(fns), 2))
    for r in range(repeats):
        for i, fn in enumerate(fns):
            gc.collect()
            gc.disable()
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                out[r, i] = time.perf_counter() - t0, time.process_time() - c0
            finally:
                gc.enable()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chexpert-rows", type=int, default=223_414)
    p.add_argument("--nih-rows", type=int, default=112_120)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--gzip", action="store_true", help="also time the .csv.gz of each table")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chexpert = root / "CheXpert-v1.0" / "train.csv"
        chexpert.parent.mkdir()
        write_chexpert(chexpert, args.chexpert_rows)
        nih = root / "Data_Entry_2017_v2020.csv"
        write_nih(nih, args.nih_rows)
        cases: list[tuple[str, Path, Callable[[Path], pd.DataFrame]]] = [
            ("CheXpert, 5 labels", chexpert, read_chexpert_csv),
            ("CheXpert, 14 labels", chexpert, lambda f: read_chexpert_csv(f, CHEXPERT_LABELS)),
            ("NIH, 5 labels", nih, read_nih_csv),
        ]
        if args.gzip:
            for name, path, reader in list(cases):
                packed = path.with_name(path.name + ".gz")
                with path.open("rb") as src, gzip.open(packed, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                cases.append((f"{name}, .csv.gz", packed, reader))
        print(
            f"{args.chexpert_rows} CheXpert rows, {args.nih_rows} NIH rows, {args.repeats} "
            "rounds; best times, their ratio, and the median of the rounds' ratios"
        )
        print(f"{'':22s} {'-' * 17} wall {'-' * 17} {'-' * 17} CPU {'-' * 18}")
        head = f" {'read_csv':>9s} {'reader':>9s} {'ratio':>6s} {'median':>6s}"
        print(f"{'table':22s}{head}{head}")
        for name, path, reader in cases:
            times = timings(
                [lambda path=path: pd.read_csv(path), lambda path=path, r=reader: r(path)],
                args.repeats,
            )
            best = times.min(axis=0)
            ratios = np.median(times[:, 1] / times[:, 0], axis=0)
            print(f"{name:22s}", end="")
            for k in (0, 1):
                print(
                    f" {best[0, k]:7.3f} s {best[1, k]:7.3f} s {best[1, k] / best[0, k]:5.2f}x"
                    f" {ratios[k]:5.2f}x",
                    end="",
                )
            print()


if __name__ == "__main__":
    main()
