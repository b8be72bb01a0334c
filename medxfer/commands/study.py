"""``medxfer study``: replicas of one configuration into a study folder, resumable (the
library side is :mod:`medxfer.study`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medxfer import artifacts
from medxfer.commands.common import CommandParser
from medxfer.study import run_study

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """``medxfer study -c CONFIG [-c MORE] --out STUDY --name NAME --seeds 0 1 2 [-- overrides]``."""
    if "--" in argv:
        i = list(argv).index("--")
        argv, extra = list(argv[:i]), list(argv[i + 1 :])
    else:
        extra = []
    p = CommandParser(
        prog="medxfer study", description="Run N seeds of a config into a study folder (resumable)."
    )
    p.add_argument(
        "-c", "--config", action="append", required=True, help="config file(s), as for medxfer fit"
    )
    p.add_argument("--out", type=Path, required=True, help="the study folder")
    p.add_argument(
        "--name", required=True, help="this configuration's name in the study (e.g. bit-r50x1_f0.1)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    for file in args.config:
        if not Path(file).is_file():
            raise FileNotFoundError(f"config {file} not found")
    folders = run_study(args.config, args.out, args.name, args.seeds, extra)
    print(
        f"[study] {len(folders)} replica(s) of {args.name} finished in {args.out / args.name}\n"
        f"next: medxfer report {args.out}   (tables and plots in {args.out / artifacts.REPORT_DIR})",
        flush=True,
    )
    return 0
