"""``medxfer report STUDY``: the tables and plots of a study folder (built by
:func:`medxfer.report.build_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medxfer.commands.common import CommandParser
from medxfer.report import build_report

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """``medxfer report STUDY [--out DIR] [--baseline NAME] [--compare A B]``."""
    p = CommandParser(prog="medxfer report", description="Tables and plots of a study folder.")
    p.add_argument("study", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: STUDY/report")
    p.add_argument(
        "--baseline", default=None, help="configuration whose AUROC the others must match"
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="t-test between two configurations",
    )
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args(argv)
    path = build_report(args.study, args.out, args.baseline, args.compare, args.resamples)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
