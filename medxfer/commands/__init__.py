"""The ``medxfer`` command: the top layer of medxfer, on top of the library.

``medxfer fit | validate | test | predict -c cfg.yaml`` run through LightningCLI
(:mod:`medxfer.commands.lightning`); ``list``, ``synthesize``, ``prepare`` (image cache),
``study`` and ``report`` are one module each here, with a ``main(argv)``. What they share -- the
argument parser, logging, the one-line error surface -- is :mod:`medxfer.commands.common`.

Dependencies point one way: commands import the library (``medxfer.data``, ``.metrics``,
``.backbones``, ``.tasks``, ``.datamodules``...), never the reverse (``tests/test_layers.py``).
Start-up is kept short: this module imports the standard library only and each subcommand
imports what it uses when it runs, so ``medxfer``, ``medxfer --help`` and ``medxfer list ...``
never import torch, Lightning or timm.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from medxfer.commands.common import DEBUG_ENV, check_config_files, configure_logging, error_line

__all__ = ["COMMANDS", "LIGHTNING_COMMANDS", "main", "raise_unknown_command", "usage"]

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
    "list": "list backbones (with their weight files), tasks, datamodules or image readers",
    "synthesize": "write synthetic data in the real formats (cxr, mimic, padchest, covidx, tb, "
    "natural, derm, mammo, table, seg)",
    "prepare": "pre-resize a config's images into an HDF5 cache (resumable)",
    "study": "plan / run / sweep a study file's grid of runs into a study folder (resumable; "
    "local, SLURM, W&B)",
    "report": "tables and plots of a study folder",
    "export": "write a run's backbone as .safetensors with its normalisation and weights chain",
    "convert": "convert a BYOL (JAX) or SimCLR (TensorFlow) ResNet-50 release to .safetensors",
}

#: The module of each of medxfer's own subcommands (``list`` is a builtin's name).
_MODULES = {"list": "listing"}


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
        line = error_line(err)
        if line is None or debug:
            raise
        print(line, file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int | None:
    """Run the subcommand ``argv[0]`` on the rest of ``argv``.

    The YAML files a LightningCLI command names are checked before Lightning is imported
    (:func:`~medxfer.commands.common.check_config_files`: a syntax error or a key written
    twice names the file and lines, at once). A LightningCLI command stopped by SIGTERM (a scheduler's time limit, pre-emption) returns
    :data:`medxfer.resume.SIGTERM_EXIT` (143) after ``fit`` has written ``last.ckpt``: never 0,
    so ``&&`` and schedulers see the run unfinished.
    """
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        module = importlib.import_module(f"medxfer.commands.{_MODULES.get(command, command)}")
        return module.main(rest)
    if command not in LIGHTNING_COMMANDS and not command.startswith("-"):
        raise_unknown_command(command)
    check_config_files(rest)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from medxfer.commands.lightning import build_cli
    from medxfer.resume import SIGTERM_EXIT

    try:
        build_cli(argv)
    except SIGTERMException:
        print(
            f"medxfer: {command} stopped by SIGTERM (exit status {SIGTERM_EXIT})", file=sys.stderr
        )
        return SIGTERM_EXIT
    return 0


def raise_unknown_command(command: str) -> None:
    """Raise the error for an unknown ``command``: every command, and the closest one.

    Raises:
        ConfigError: always.
    """
    import difflib

    from medxfer.errors import ConfigError

    names = [*LIGHTNING_COMMANDS, *COMMANDS]
    close = difflib.get_close_matches(command, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown command '{command}'{hint} The commands: {', '.join(names)} "
        "(`medxfer --help` describes them)"
    )


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
