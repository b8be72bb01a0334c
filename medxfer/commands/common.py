"""What every ``medxfer`` command shares: the argument parser of medxfer's own subcommands, the
logging set-up and the error surface (an expected failure is one line and exit status 2).

Standard library only at module level: ``medxfer --help`` and ``medxfer list`` start in about
the time of a bare ``python -c "import torch"`` or less.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

__all__ = [
    "DEBUG_ENV",
    "SYNTHETIC_FOLDERS",
    "CommandParser",
    "configure_logging",
    "error_line",
    "synthesize_hint",
]

#: Set to show the full traceback of an expected error (bad table, image, cache, missing file).
DEBUG_ENV = "MEDXFER_DEBUG"

#: Folders ``medxfer synthesize KIND DIR`` writes, by kind.
SYNTHETIC_FOLDERS = {
    "cxr": ("chexpert", "nih"),
    "mimic": ("mimic",),
    "padchest": ("padchest",),
    "covidx": ("covidx",),
    "tb": ("montgomery_tb", "shenzhen_tb"),
    "natural": ("natural", "flowers", "pets"),
    "derm": ("derm", "derm_b"),
    "mammo": ("mammo", "mammo_b"),
    "table": ("table", "table_b", "table_folder"),
    "seg": ("montgomery", "drive", "siim"),
}


class CommandParser(argparse.ArgumentParser):
    """The argument parser of medxfer's own subcommands: a usage error is raised (the command
    prints it as one line with exit status 2, like every other expected error) instead of
    argparse's usage block."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        from medxfer.errors import ConfigError

        raise ConfigError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def error_line(err: BaseException) -> str | None:
    """The one line ``medxfer: error: ...`` (with the command that creates missing demo data)
    that reports ``err`` when it is an expected failure (:func:`medxfer.errors.find_expected`)
    or a command-line / config parsing error (jsonargparse raises ``argparse.ArgumentError``
    with ``exit_on_error=False``); None for anything else (a bug keeps its traceback)."""
    from medxfer.errors import find_expected, one_line

    cause = find_expected(err) or (err if isinstance(err, argparse.ArgumentError) else None)
    if cause is None:
        return None
    message = one_line(cause)
    return f"medxfer: error: {message}{synthesize_hint(message)}"


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
