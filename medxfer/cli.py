"""The ``medxfer`` command: ``fit | validate | test | predict -c cfg.yaml`` (LightningCLI, see
:mod:`medxfer.lightning_cli`), plus ``medxfer list``, ``synthesize``, ``prepare`` (image cache),
``study`` and ``report``.

Start-up is kept short: this module imports the standard library only, and each subcommand
imports what it uses when it runs. ``medxfer``, ``medxfer --help`` and ``medxfer list ...`` never
import torch, Lightning or timm (the registries list declared entries; see
:mod:`medxfer.catalog`); the four LightningCLI subcommands do. ``MedxferCLI`` and ``build_cli``
are importable from here as before (loaded on first use).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from medxfer.lightning_cli import MedxferCLI, build_cli

__all__ = ["CommandParser", "MedxferCLI", "build_cli", "format_results", "main"]

#: The LightningCLI subcommands, with one line each for ``medxfer --help``.
LIGHTNING_COMMANDS = {
    "fit": "train on a config (-c cfg.yaml; --resume RUN_DIR continues a run), then test the best "
    "checkpoint on every test set",
    "validate": "one evaluation epoch over the validation set",
    "test": "one evaluation epoch over every test set; results.json and results.md",
    "predict": "run inference and write predictions",
}
#: medxfer's own subcommands, with one line each for ``medxfer --help``.
COMMANDS = {
    "list": "list registered backbones (with their weight files), tasks or datamodules",
    "synthesize": "write synthetic data in the real formats (cxr, derm, mammo, table, seg)",
    "prepare": "pre-resize a config's images into an HDF5 cache (resumable)",
    "study": "run N seeds of a config into a study folder (resumable)",
    "report": "tables and plots of a study folder",
}


def __getattr__(name: str) -> Any:
    """``MedxferCLI`` and ``build_cli`` live in :mod:`medxfer.lightning_cli` (Lightning)."""
    if name in ("MedxferCLI", "build_cli"):
        from medxfer import lightning_cli

        return getattr(lightning_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_results(
    flat: dict[str, float], subgroups: dict[str, dict[str, Any]] | None = None
) -> str:
    """Markdown tables of ``test/<set>/<metric>`` values: one row per test set with the headline
    metrics (AUROC, ECE, loss, per-label AUROC with its number of positives), then one row per
    set and attribute with the subgroup summary when subgroup metrics were logged. NaN (e.g. a
    gap with fewer than two scored subgroups) reads ``n/a``.

    ``subgroups`` maps a test set to its ``analysis/subgroups_test_<set>.json`` (as written by
    :class:`~medxfer.callbacks.SubgroupCallback`); each adds one row per set, attribute and group
    with the group's size and metric value (AUROC, accuracy or Dice: the file's ``metric``), the
    same for every task. A group under ``min_size`` reads ``too small``, one whose metric is
    undefined ``n/a``, and an unknown-attribute group scored apart from the gap ``(apart)``.

    Example:
        >>> print(format_results({"test/nih/auroc/Edema": 0.75, "test/nih/positives/Edema": 12}))
        | set | auroc/Edema |
        |---|---|
        | nih | 0.7500 (12 pos) |
    """
    from medxfer.naming import POSITIVES, SUBGROUP, SUBGROUP_SUMMARY

    rows: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        _, name, metric = key.split("/", 2)
        rows.setdefault(name, {})[metric] = value

    def cell(v: float | None) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"

    def main_cell(r: dict[str, float], metric: str) -> str:
        text = cell(r.get(metric))
        if metric.startswith("auroc/"):
            pos = r.get(f"{POSITIVES}/{metric.removeprefix('auroc/')}")
            text += "" if pos is None or math.isnan(pos) else f" ({pos:.0f} pos)"
        return text

    def order(m: str) -> tuple:
        return (m.startswith("loss"), "/" in m, m)

    apart = (f"{SUBGROUP}/", f"{POSITIVES}/")
    main = sorted({m for r in rows.values() for m in r if not m.startswith(apart)}, key=order)
    lines = ["| set | " + " | ".join(main) + " |", "|---" * (len(main) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(main_cell(r, c) for c in main) + " |"
        for name, r in rows.items()
    ]
    attrs = sorted(
        {m.split("/")[1] for r in rows.values() for m in r if m.startswith(f"{SUBGROUP}/")}
    )
    if attrs:
        lines += [
            "",
            "| set | attribute | " + " | ".join(SUBGROUP_SUMMARY) + " |",
            "|---" * (len(SUBGROUP_SUMMARY) + 2) + "|",
        ]
        for name, r in rows.items():
            for a in attrs:
                if any(k.startswith(f"{SUBGROUP}/{a}/") for k in r):
                    lines.append(
                        f"| {name} | {a} | "
                        + " | ".join(cell(r.get(f"{SUBGROUP}/{a}/{s}")) for s in SUBGROUP_SUMMARY)
                        + " |"
                    )
    if subgroups:
        lines += _group_tables(subgroups, cell)
    return "\n".join(lines)


def _group_tables(subgroups: dict[str, dict[str, Any]], cell: Any) -> list[str]:
    """The per-group rows of :func:`format_results`: one table per subgroup metric (a run has
    one; sets scored by different metrics would get a table each)."""
    from medxfer import artifacts
    from medxfer.metrics.subgroups import SubgroupReport  # torch: only when there are groups

    lines: list[str] = []
    for metric in dict.fromkeys(str(data["metric"]) for data in subgroups.values()):
        lines += ["", f"| set | attribute | group | n | {metric} |", "|---" * 5 + "|"]
        for name, data in subgroups.items():
            if str(data["metric"]) != metric:
                continue
            for attr, raw in data[artifacts.ATTRIBUTES].items():
                rep = SubgroupReport.from_dict(raw)
                for group, n in rep.sizes.items():
                    if group in rep.too_small:
                        value = "too small"
                    elif group in rep.unknown:
                        value = f"{cell(rep.unknown[group])} (apart)"
                    else:
                        value = cell(rep.values.get(group))  # undefined: n/a
                    lines.append(f"| {name} | {attr} | {group} | {n} | {value} |")
    return lines


class CommandParser(argparse.ArgumentParser):
    """The argument parser of medxfer's own subcommands: a usage error is raised (the command
    prints it as one line with exit status 2, like every other expected error) instead of
    argparse's usage block."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        from medxfer.errors import ConfigError

        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _list(argv: Sequence[str]) -> int:
    from medxfer.backbones import BACKBONES  # the registry only: neither torch nor timm
    from medxfer.catalog import DATAMODULES, TASKS  # declared entries: no Lightning

    registries = {"backbones": BACKBONES, "tasks": TASKS, "datamodules": DATAMODULES}
    parser = CommandParser(prog="medxfer list", description="List registered components.")
    parser.add_argument("what", choices=sorted(registries))
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    args = parser.parse_args(argv)
    reg = registries[args.what]
    names = reg.names(args.pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        entry = reg.entry(name)
        print(f"{name:<{width}}  {entry.description}")
        for source, ws in entry.metadata.get("sources", {}).items():
            print(f"{'':<{width}}    .{source:<15} {ws.filename}  ({ws.description})")
    if args.what == "backbones":
        print(f"{'timm/<name>':<{width}}  any timm model, e.g. timm/resnet18, timm/convnext_tiny")
    return 0


def _synthesize(argv: Sequence[str]) -> int:
    parser = CommandParser(
        prog="medxfer synthesize",
        description="Write synthetic data in real formats: chest X-rays (CheXpert and NIH "
        "ChestX-ray14 layouts), dermatology cases (case tables of 1-6 photos), 4-view DICOM "
        "mammography exams, or a user's table (a metadata CSV and an image folder) for ImageTable.",
    )
    parser.add_argument("kind", choices=["cxr", "derm", "mammo", "table", "seg"])
    parser.add_argument(
        "out",
        type=Path,
        help="folder to write chexpert/ and nih/ (derm/ and derm_b/, mammo/ and mammo_b/, "
        "table/ and table_b/ with table_folder/; seg: montgomery/, drive/, siim/) into",
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
    from medxfer.datamodules import (  # after parsing: `--help` needs no Lightning
        write_synthetic_chexpert,
        write_synthetic_derm,
        write_synthetic_drive,
        write_synthetic_mammo,
        write_synthetic_montgomery,
        write_synthetic_nih,
        write_synthetic_siim,
        write_synthetic_table,
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


def main(argv: Sequence[str] | None = None) -> int | None:
    """Entry point of the ``medxfer`` console script and ``python -m medxfer``.

    Every subcommand reports an expected failure (a bad table, image, weight file, config key,
    cache; see :mod:`medxfer.errors`) as one line ``medxfer: error: ...`` and exit status 2;
    ``--debug`` or ``MEDXFER_DEBUG=1`` re-raises it with its traceback. Logging of medxfer's
    summaries (split sizes, label spaces, weight load reports, cache use) is on at INFO;
    ``--quiet`` keeps warnings only.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get(DEBUG_ENV))
    quiet = "--quiet" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet")]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        if not argv:
            print("medxfer: error: a command is required", file=sys.stderr)
        return 0 if argv else 2
    configure_logging(quiet)
    try:
        return _dispatch(argv)
    except Exception as err:
        from medxfer.errors import find_expected, one_line

        cause = find_expected(err) or _argument_error(err)
        if cause is None or debug:
            raise
        message = one_line(cause)
        print(f"medxfer: error: {message}{synthesize_hint(message)}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int | None:
    """Run the subcommand ``argv[0]`` on the rest of ``argv``."""
    command, rest = argv[0], argv[1:]
    if command == "list":
        return _list(rest)
    if command == "synthesize":
        return _synthesize(rest)
    if command == "study":
        from medxfer.study import main as study_main

        return study_main(rest)
    if command == "prepare":
        from medxfer.prepare import main as prepare_main

        return prepare_main(rest)
    if command == "report":
        from medxfer.report import main as report_main

        return report_main(rest)
    from medxfer.lightning_cli import build_cli

    build_cli(argv)
    return 0


def _argument_error(err: BaseException) -> BaseException | None:
    """``err`` when it is a command-line or config parsing error (jsonargparse raises
    ``argparse.ArgumentError`` with ``exit_on_error=False``), else None."""
    return err if isinstance(err, argparse.ArgumentError) else None


def configure_logging(quiet: bool = False) -> None:
    """Show medxfer's log records on stderr: INFO by default, WARNING with ``--quiet``.

    Only the ``medxfer`` logger gets a handler (the package's modules, including the backbones,
    tasks and datamodules packages, log under ``medxfer.``), so other libraries keep their own
    settings. Records still propagate (to pytest's capture, or to handlers an embedding
    application set on the root logger). Idempotent: a second call changes the level only.
    """
    import logging

    logger = logging.getLogger("medxfer")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "_medxfer", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("medxfer: %(message)s"))
        handler._medxfer = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def usage() -> str:
    """The text of ``medxfer --help``: the subcommands, one line each."""
    width = max(map(len, [*LIGHTNING_COMMANDS, *COMMANDS]))
    lines = [
        "usage: medxfer <command> [options]",
        "",
        "Transfer-learning studies on medical images (PyTorch Lightning).",
        "",
        "training and evaluation (LightningCLI; `medxfer fit --help` lists every option):",
        *(f"  {name:<{width}}  {text}" for name, text in LIGHTNING_COMMANDS.items()),
        "",
        "data, studies and registries:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "`medxfer <command> --help` describes a command. Example: medxfer fit -c configs/tiny.yaml",
        f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error in the user's files or "
        "settings; --quiet shows warnings only (default: medxfer's summaries at INFO).",
    ]
    return "\n".join(lines)


#: Set to show the full traceback of an expected error (bad table, image, cache, missing file).
DEBUG_ENV = "MEDXFER_DEBUG"

#: Folders ``medxfer synthesize KIND DIR`` writes, by kind.
SYNTHETIC_FOLDERS = {
    "cxr": ("chexpert", "nih"),
    "derm": ("derm", "derm_b"),
    "mammo": ("mammo", "mammo_b"),
    "table": ("table", "table_b", "table_folder"),
    "seg": ("montgomery", "drive", "siim"),
}


def synthesize_hint(message: str) -> str:
    """For a missing file under a folder ``medxfer synthesize`` writes (the demo configs' data),
    the command that creates it; else ``""``."""
    for kind, folders in SYNTHETIC_FOLDERS.items():
        for folder in folders:
            match = re.search(rf"(\S*?)/?{folder}/", message)
            if match and "not found" in message and "synthetic" in message:
                root = match.group(1) or "."
                return f"\n  create the demo data with: medxfer synthesize {kind} {root}"
    return ""
