"""``medxfer synthesize KIND DIR``: synthetic data in the real on-disk formats of each modality
(CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, PadChest, COVIDx and tuberculosis layouts, dermatology case tables, 4-view DICOM mammography
exams, a user's table with an image folder, the three segmentation benchmark layouts), read by
the same readers as the real files."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from medxfer.commands.common import CommandParser

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Entry point of ``medxfer synthesize``."""
    parser = CommandParser(
        prog="medxfer synthesize",
        description="Write synthetic data in real formats: chest X-rays (CheXpert and NIH "
        "ChestX-ray14 layouts; MIMIC-CXR-JPG with its gzip tables; PadChest; COVIDx; the "
        "Montgomery and Shenzhen tuberculosis sets), natural images (CIFAR, Flowers-102, Pets), dermatology cases (case tables of 1-6 photos), 4-view DICOM "
        "mammography exams, or a user's table (a metadata CSV and an image folder) for ImageTable.",
    )
    parser.add_argument(
        "kind",
        choices=[
            "cxr",
            "mimic",
            "padchest",
            "covidx",
            "tb",
            "natural",
            "derm",
            "mammo",
            "table",
            "seg",
        ],
    )
    parser.add_argument(
        "out",
        type=Path,
        help="folder to write chexpert/ and nih/ (derm/ and derm_b/, mammo/ and mammo_b/, "
        "table/ and table_b/ with table_folder/; mimic: mimic/; padchest: padchest/; covidx: "
        "covidx/; tb: montgomery_tb/ and shenzhen_tb/; natural: natural/ (CIFAR-10 python, CIFAR-100 "
        "binary), flowers/, pets/; seg: montgomery/, drive/, siim/) into",
    )
    parser.add_argument(
        "--patients", type=int, default=400, help="CheXpert-layout patients / derm cases / exams"
    )
    parser.add_argument(
        "--shift-patients", type=int, default=150, help="NIH-layout patients / shifted derm cases"
    )
    parser.add_argument("--size", type=int, default=80, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # after parsing: `--help` needs no Lightning
    from medxfer.datamodules.chest_xray import (
        write_synthetic_chexpert,
        write_synthetic_covidx,
        write_synthetic_mimic,
        write_synthetic_nih,
        write_synthetic_padchest,
        write_synthetic_tuberculosis,
    )
    from medxfer.datamodules.dermatology import write_synthetic_derm
    from medxfer.datamodules.image_table import write_synthetic_table
    from medxfer.datamodules.mammography import write_synthetic_mammo
    from medxfer.datamodules.segmentation import (
        write_synthetic_drive,
        write_synthetic_montgomery,
        write_synthetic_siim,
    )

    writers = {  # kind -> (in-domain folder and writer, shifted folder and writer)
        "cxr": (("chexpert", write_synthetic_chexpert), ("nih", write_synthetic_nih)),
        "derm": (
            ("derm", write_synthetic_derm),
            ("derm_b", partial(write_synthetic_derm, shifted=True)),
        ),
        "mammo": (
            ("mammo", write_synthetic_mammo),
            ("mammo_b", partial(write_synthetic_mammo, shifted=True)),
        ),
        "table": (
            ("table", write_synthetic_table),
            ("table_b", partial(write_synthetic_table, shifted=True)),
        ),
    }
    if args.kind == "seg":  # the three benchmark layouts (image counts: --patients)
        n, size = min(args.patients, 60), min(args.size, 96)
        written = [
            write_synthetic_montgomery(args.out / "montgomery", n, size=size, seed=args.seed),
            write_synthetic_drive(args.out / "drive", n // 2, n // 4, size=size, seed=args.seed),
            write_synthetic_siim(args.out / "siim", n, size=size, seed=args.seed),
        ]
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    if args.kind in ("mimic", "padchest", "covidx"):  # one source each, its official split inside
        write = {
            "mimic": write_synthetic_mimic,
            "padchest": write_synthetic_padchest,
            "covidx": write_synthetic_covidx,
        }[args.kind]
        path = write(args.out / args.kind, args.patients, size=args.size, seed=args.seed)
        print(f"wrote {path}")
        return 0
    if args.kind == "natural":  # --patients: CIFAR training images (and a third for the test)
        from medxfer.datamodules.natural import (
            write_synthetic_cifar,
            write_synthetic_flowers,
            write_synthetic_pets,
        )

        n = args.patients
        root = write_synthetic_cifar(
            args.out / "natural", "cifar10", "python", n, n // 3, args.seed
        )
        write_synthetic_cifar(args.out / "natural", "cifar100", "binary", n, n // 3, args.seed)
        flowers = write_synthetic_flowers(
            args.out / "flowers", size=min(args.size, 64), seed=args.seed
        )
        pets = write_synthetic_pets(args.out / "pets", size=min(args.size, 64), seed=args.seed)
        print(f"wrote {root} (CIFAR-10 python, CIFAR-100 binary), {flowers} and {pets}")
        return 0
    if args.kind == "tb":  # both collections, each at its real size unless --patients is smaller
        written = [
            write_synthetic_tuberculosis(
                args.out / folder,
                min(args.patients, n),
                size=args.size,
                seed=args.seed + k,
                collection=collection,
            )
            for k, (folder, n, collection) in enumerate(
                [("montgomery_tb", 138, "MCUCXR"), ("shenzhen_tb", 662, "CHNCXR")]
            )
        ]
        print("wrote " + " and ".join(str(p) for p in written))
        return 0
    (a_dir, a_write), (b_dir, b_write) = writers[args.kind]
    a = a_write(args.out / a_dir, args.patients, size=args.size, seed=args.seed)
    b = b_write(args.out / b_dir, args.shift_patients, size=args.size, seed=args.seed + 1)
    print(f"wrote {a} and {b}")
    if args.kind == "table":
        tree = write_synthetic_table(
            args.out / "table_folder",
            args.patients,
            size=args.size,
            seed=args.seed,
            layout="folder",
        )
        print(f"wrote the image-folder layout at {tree}")
    return 0
