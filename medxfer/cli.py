"""The ``medxfer`` command: LightningCLI for ``fit | validate | test | predict -c cfg.yaml``,
plus ``medxfer list``, ``synthesize``, ``prepare`` (image cache), ``study`` and ``report``.

Models and datamodules are chosen in subclass mode (``class_path: MultiLabelClassifier`` --
short names resolve because medxfer's tasks and datamodules are imported here). The
datamodule's number of outputs, label names and channels are linked into the task, so sizes
are written once. After ``fit`` the best checkpoint is tested on every test set (the
in-distribution split and each shifted set) and the table is written to the run folder as
``results.json`` and ``results.md``.
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
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import medxfer.datamodules as datamodules
import medxfer.tasks as tasks
from medxfer.backbones import BACKBONES
from medxfer.datamodules import MedxferDataModule
from medxfer.tasks import TransferTask

__all__ = ["MedxferCLI", "build_cli", "format_results", "main"]


class MedxferCLI(LightningCLI):
    """LightningCLI with medxfer's links and a test of the best checkpoint after ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.label_names", "model.init_args.label_names", apply_on="instantiate"
        )
        parser.link_arguments("data.channels", "model.init_args.in_chans", apply_on="instantiate")
        parser.add_argument(
            "--hyperrule",
            type=bool,
            default=False,
            help="fit only: set the resolution, SGD, lr, schedule, steps and MixUp by "
            "BiT-HyperRule, scaled to the global batch (see medxfer.hyperrule)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint on every test set (fit only)",
        )

    def after_instantiate(self) -> None:
        """Refuse a task whose output type contradicts the datamodule's (multi-class data in a
        multi-label task trains, but scores the wrong thing), and write the resolved input
        normalisation into the run's saved config."""
        data_type = getattr(self.datamodule, "output_type", None)
        model_type = getattr(self.model, "output_type", None)
        if data_type and model_type and data_type != model_type:
            hint = "CaseClassifier" if data_type == "multiclass" else "MultiLabelClassifier"
            raise ValueError(
                f"the data are {data_type} but {type(self.model).__name__} is {model_type}: "
                f"use a {data_type} task (e.g. class_path: {hint})"
            )
        norm = getattr(self.model, "input_norm", None)
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if norm is not None and config is not None and "model" in config:
            config["model"]["init_args"]["input_norm"] = norm

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.after_instantiate()

    #: The BiT-HyperRule resolved from the data section before the classes are built.
    hyperrule: Any = None

    def before_instantiate_classes(self) -> None:
        """``fit --hyperrule true``: resolve BiT-HyperRule from the ``data`` section alone and
        write what it sets before anything is built (as ``medxfer prepare --hyperrule true``
        does): the resolution into ``data.init_args``, ``trainer.max_epochs=-1`` (the rule's
        step count decides). The learning rate and steps wait for the global batch
        (:meth:`before_fit`)."""
        config = self.config.get(self.subcommand) if self.subcommand else None
        if self.subcommand != "fit" or not config or not config.get("hyperrule"):
            return
        from medxfer.hyperrule import resolve_data

        self.hyperrule = resolve_data(config["data"])
        config["trainer"]["max_epochs"] = -1

    def before_fit(self) -> None:
        """``--hyperrule true``: the rule at the run's global batch (per-process batch x
        processes x accumulated batches) sets the task's optimiser, lr, schedule and MixUp and
        the trainer's steps; the saved config holds the values."""
        config = self.config[self.subcommand]
        if not config.get("hyperrule", False):
            return
        from medxfer.hyperrule import apply_hyperrule, describe_run

        run = apply_hyperrule(self.model, self.datamodule, self.trainer, rule=self.hyperrule)
        for key, value in run.task_settings().items():
            config["model"]["init_args"][key] = value
        config["trainer"]["max_steps"], config["trainer"]["max_epochs"] = run.total_steps, -1
        if self.trainer.is_global_zero:
            print(describe_run(run, self.datamodule, self.trainer))

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        trainer = self.trainer
        if trainer.interrupted or not getattr(self.datamodule, "eval_names", None):
            return
        ckpt = (
            "best"
            if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
            else None
        )
        results = trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False
        )
        self.write_results(results)

    def after_test(self) -> None:
        self.write_results(self.trainer.logged_metrics)

    def write_results(self, results: Sequence[dict[str, Any]] | dict[str, Any]) -> None:
        """Write test metrics to ``results.json`` (strict JSON: NaN as ``null``) and
        ``results.md`` in the run folder, and print them."""
        from medxfer import artifacts

        if not self.trainer.is_global_zero:
            return
        flat: dict[str, float] = {}
        for part in [results] if isinstance(results, dict) else results:
            flat.update({k: float(v) for k, v in part.items() if str(k).startswith("test/")})
        if not flat:
            return
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        table = format_results(flat)
        artifacts.write_text(out / artifacts.RESULTS_MD, table + "\n")
        # results.json last: its presence marks a finished run (medxfer study)
        artifacts.write_json(out / artifacts.RESULTS_JSON, flat, sort_keys=True)
        print(f"\n{table}\n\nwritten to {out / artifacts.RESULTS_MD}")


def format_results(flat: dict[str, float]) -> str:
    """Markdown tables of ``test/<set>/<metric>`` values: one row per test set with the headline
    metrics (AUROC, ECE, loss, per-label AUROC with its number of positives), then one row per
    set and attribute with the subgroup summary when subgroup metrics were logged. NaN (e.g. a
    gap with fewer than two scored subgroups) reads ``n/a``.

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
    return "\n".join(lines)


def _list(argv: Sequence[str]) -> int:
    registries = {
        "backbones": BACKBONES,
        "tasks": tasks.TASKS,
        "datamodules": datamodules.DATAMODULES,
    }
    parser = argparse.ArgumentParser(prog="medxfer list", description="List registered components.")
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
    from medxfer.datamodules import (
        write_synthetic_chexpert,
        write_synthetic_derm,
        write_synthetic_drive,
        write_synthetic_mammo,
        write_synthetic_montgomery,
        write_synthetic_nih,
        write_synthetic_siim,
        write_synthetic_table,
    )

    parser = argparse.ArgumentParser(
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


def build_cli(argv: Sequence[str], run: bool = True) -> MedxferCLI:
    """The ``medxfer`` LightningCLI on ``argv`` (``run=False``: parse and instantiate only).

    Task and datamodule plug-ins (entry points) are imported first, so a config names their
    classes by short name (``class_path: PluginTask``) as it does medxfer's own. The short name
    is the class name; an entry registered under another name warns, as configs cannot use it.
    """
    import warnings

    for registry in (tasks.TASKS, datamodules.DATAMODULES):
        registry.load_plugins()
        for entry in registry:
            class_name = getattr(entry.obj, "__name__", entry.name)
            if entry.name != class_name:
                warnings.warn(
                    f"{registry.kind} {entry.name!r} is registered under another name than its "
                    f"class; a config names it `class_path: {class_name}` "
                    f"(or {entry.obj.__module__}.{class_name})",
                    stacklevel=2,
                )
    return MedxferCLI(
        TransferTask,
        MedxferDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(argv),
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main(argv: Sequence[str] | None = None) -> int | None:
    """Entry point of the ``medxfer`` console script and ``python -m medxfer``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "list":
        return _list(argv[1:])
    if argv and argv[0] == "synthesize":
        return _synthesize(argv[1:])
    if argv and argv[0] == "study":
        from medxfer.study import main as study_main

        return study_main(argv[1:])
    if argv and argv[0] == "prepare":
        from medxfer.prepare import main as prepare_main

        return prepare_main(argv[1:])
    if argv and argv[0] == "report":
        from medxfer.report import main as report_main

        return report_main(argv[1:])
    debug = "--debug" in argv or bool(os.environ.get(DEBUG_ENV))
    argv = [a for a in argv if a != "--debug"]
    try:
        build_cli(argv)
    except _expected_errors() as err:
        if debug:
            raise
        print(f"medxfer: error: {err}{synthesize_hint(str(err))}", file=sys.stderr)
        return 2
    return 0


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


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by the user's files, reported in one line (``--debug``: traceback)."""
    from medxfer.data.cache import CacheError
    from medxfer.data.images import ImageDecodeError
    from medxfer.data.tables import TableError

    return (FileNotFoundError, TableError, ImageDecodeError, CacheError)


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
