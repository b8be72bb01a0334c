"""``medxfer prepare``: build the HDF5 image cache of a run's datamodule, once.

The same config that trains reads the cache, so their settings agree by construction::

    medxfer prepare -c configs/chexpert_demo.yaml cache/chexpert_256.h5
    medxfer fit -c configs/chexpert_demo.yaml --data.init_args.cache=cache/chexpert_256.h5

Only the config's ``data`` section is used (no model is built, no weights are needed), and the
config's ``hyperrule`` switch: with ``hyperrule: true`` (or ``--hyperrule true``, as given to
``medxfer fit``) the images are cached at the resolution BiT-HyperRule sets
(:func:`rule_of_section`).
Every image of every table the datamodule reads (train, explicit val / test, shifted sets) is
decoded, resized to the side its transform starts with and stored; the tables are stored beside
the pixels. A killed run continues where it stopped when started again. See
:mod:`medxfer.data.cache` for the file layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medxfer.commands.common import CommandParser
from medxfer.data.cache import CacheError
from medxfer.data.images import ImageDecodeError

__all__ = ["datamodule_from_configs", "datamodule_from_section", "main", "rule_of_section"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _data_parser() -> Any:
    """A parser of the ``data`` section alone, as LightningCLI parses it."""
    from jsonargparse import ArgumentParser

    from medxfer.datamodules import MedxferDataModule
    from medxfer.plugins import load_all

    load_all("datamodules")  # every declared datamodule resolves by short name, as in `fit`

    parser = ArgumentParser(prog="medxfer prepare", exit_on_error=False)
    parser.add_subclass_arguments(MedxferDataModule, "data", required=True)
    return parser


def datamodule_from_section(data: Any) -> Any:
    """Instantiate a ``data`` section (``class_path`` / ``init_args``, a dict or a parsed
    namespace) alone: no model, no trainer."""
    section = data.as_dict() if hasattr(data, "as_dict") else dict(data)
    parser = _data_parser()
    return parser.instantiate(parser.parse_args(["--data", json.dumps(section)])).data


def datamodule_from_configs(
    configs: Sequence[str | Path], overrides: Sequence[str] = (), hyperrule: bool | None = None
) -> Any:
    """Instantiate the datamodule of ``medxfer fit`` configs (later files override earlier
    ones, as with repeated ``-c``), with ``--data.init_args.<name>=<value>`` overrides, parsed
    and type-checked the way LightningCLI parses them. ``hyperrule`` (default: the configs'
    ``hyperrule`` value) sets the resolution BiT-HyperRule gives the fit of the same
    command."""
    section: dict[str, Any] = {}
    for path in configs:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        section = _merge(section, loaded.get("data") or {})
        if hyperrule is None and "hyperrule" in loaded:
            hyperrule = None if loaded["hyperrule"] is None else bool(loaded["hyperrule"])
    if not section:
        raise ValueError(f"no 'data' section in {', '.join(map(str, configs))}")
    parser = _data_parser()
    cfg = parser.parse_args(["--data", json.dumps(section), *overrides])
    if hyperrule:
        rule_of_section(cfg.data)
    return parser.instantiate(cfg).data


def rule_of_section(data: Any) -> tuple[Any, dict[str, int], int]:
    """BiT-HyperRule of a parsed ``data`` section, resolved before anything else is built: the
    datamodule of the section reads its tables and first image (no model, no trainer), the
    rule's resolution is written into ``data.init_args`` in place, and a line says what was
    set. Returns the rule (at the published batch of 512), the resolution settings and the
    datamodule's per-process batch size (its default when the section leaves it unset)."""
    from lightning.pytorch.utilities import rank_zero_only

    from medxfer.hyperrule import describe_rule, hyperrule_of, resolution_settings

    datamodule = datamodule_from_section(data)
    rule = hyperrule_of(datamodule)
    settings = resolution_settings(datamodule, rule)
    for key, value in settings.items():
        data["init_args"][key] = value
    if rank_zero_only.rank == 0:
        line = describe_rule(rule, datamodule, settings)
        print(f"{line} (lr, steps: at the run's global batch)", flush=True)
    return rule, settings, int(datamodule.batch_size)


def _true_false(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() == "true"


def main(argv: Sequence[str]) -> int:
    """Entry point of ``medxfer prepare``."""
    parser = CommandParser(
        prog="medxfer prepare",
        description="Pre-resize a datamodule's images into an HDF5 cache (resumable).",
    )
    parser.add_argument(
        "-c", "--config", action="append", required=True, help="a fit config (repeatable)"
    )
    parser.add_argument("out", type=Path, help="the .h5 cache file to create or continue")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes")
    parser.add_argument(
        "--bits", type=int, choices=(8, 16), default=None, help="default: from the first image"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images between flushes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--hyperrule",
        type=_true_false,
        default=None,
        help="cache at BiT-HyperRule's resolution, as `medxfer fit --hyperrule true` trains "
        "(default: the config's hyperrule value)",
    )
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--data.")]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)} (only --data.* overrides)")
    dm = datamodule_from_configs(args.config, overrides, hyperrule=args.hyperrule)
    try:
        report = dm.build_cache(
            args.out,
            bits=args.bits,
            workers=args.workers,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except (CacheError, ImageDecodeError) as err:
        print(f"medxfer prepare: error: {err}", file=sys.stderr)
        return 2
    settings = dm.cache_settings()
    print(report)
    print(
        f"reader {settings.reader}, side {settings.side} px; train with "
        f"--data.init_args.cache={args.out} (or `cache: {args.out}` under data.init_args)"
    )
    for err in report.bad[:5]:
        print(f"  bad: {err}")
    return 0
