"""What every ``medxfer`` command shares: the argument parser of medxfer's own subcommands, the
logging set-up and the error surface (an expected failure is one line and exit status 2).

Standard library only at module level: ``medxfer --help`` and ``medxfer list`` start in about
the time of a bare ``python -c "import torch"`` or less.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = [
    "DEBUG_ENV",
    "SYNTHETIC_FOLDERS",
    "CommandParser",
    "check_config_files",
    "check_yaml",
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


def check_yaml(path: str | Path) -> None:
    """Check that the YAML file ``path`` parses and repeats no key in any mapping.

    PyYAML (and so jsonargparse) keeps the last of two equal keys without a word, so a config
    with ``lr`` twice trains with whichever came last; and jsonargparse parses a file's text,
    so a syntax error names ``<unicode string>``, not the file. The file is composed (not
    constructed: custom tags need no constructor) and every mapping's keys compared.

    Raises:
        ConfigError: a syntax error (file, line, column, the parser's words), or a repeated key
            (file, the key's dotted path and both lines).
    """
    import yaml

    from medxfer.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as stream:
            root = yaml.compose(stream, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(f"{path}{where}: YAML syntax error: {what}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML syntax error: {err}") from err
    todo: list[tuple[str, yaml.Node | None]] = [("", root)]
    while todo:
        prefix, node = todo.pop()
        if isinstance(node, yaml.SequenceNode):
            todo += [(f"{prefix}[{i}]", item) for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else None
            dotted = f"{prefix}.{name}" if prefix else str(name)
            if name is not None and name != "<<":
                line = key.start_mark.line + 1
                if name in first:
                    raise ConfigError(
                        f"{path}: key '{dotted}' appears twice (lines {first[name]} and {line}); "
                        "YAML would silently keep the last: remove one"
                    )
                first[name] = line
            todo.append((dotted, value))


def check_config_files(argv: Sequence[str]) -> None:
    """:func:`check_yaml` on every YAML file a command line names (``-c cfg.yaml``,
    ``--config=cfg.yaml``, ``--data=data.yaml``): each value ending in ``.yaml`` / ``.yml``
    that is a file. A missing one is left to the command, which names it."""
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value.endswith((".yaml", ".yml")) and Path(value).is_file():
            check_yaml(value)


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
