"""``medxfer report STUDY``: the tables and plots of a study folder (built by
:func:`medxfer.report.build_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medxfer.commands.common import CommandParser
from medxfer.report import TESTS, build_report

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """``medxfer report STUDY [--out DIR] [--metric M ...] [--test T] [--layout L]
    [--reference CSV] [--task-axis AXIS] [--baseline NAME] [--compare A B] [--resamples N]``."""
    p = CommandParser(prog="medxfer report", description="Tables and plots of a study folder.")
    p.add_argument("study", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: STUDY/report")
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="a test metric as in results.json (auroc_mean, top1, ece, dice_mean, "
        "subgroup/sex/gap ...); repeat for several; default: every headline metric logged",
    )
    p.add_argument(
        "--test",
        choices=TESTS,
        default="welch",
        help="two-sample t-test of the best-vs-others, comparison and reference tables "
        "(paired: where configurations share seeds and test cases)",
    )
    p.add_argument(
        "--layout",
        default=None,
        metavar="ROWS:COLS[:TABLES]",
        help="a grid of tables by axes of the runs (axes.json; 'set' = test set), "
        "e.g. task:init,model:shots",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="CSV of published replica values: axis columns, [set,] seed, metric, value",
    )
    p.add_argument(
        "--task-axis", default="task", help="the axis whose values are tasks (default: task)"
    )
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
    path = build_report(
        args.study,
        args.out,
        args.baseline,
        args.compare,
        args.resamples,
        metrics=args.metric,
        test=args.test,
        layout=args.layout,
        reference=args.reference,
        task_axis=args.task_axis,
    )
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
