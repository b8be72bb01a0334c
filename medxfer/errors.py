"""The errors medxfer raises for problems in a user's settings, and the set of failures the
``medxfer`` command reports in one line.

Problems in the user's files have their own classes where they are found (``TableError`` for
tables, ``ImageDecodeError`` for images, ``CacheError`` for the HDF5 cache, ``RLEError`` for
run-length masks, ``WeightsError`` for weight files, ``RunFileError`` for a run folder's own
files: checkpoints, ``results.json``, the folder's lock); a setting medxfer cannot use is a
:class:`ConfigError`. :func:`expected_errors` gathers them so that every subcommand exits with
status 2 and one line naming the file, line, column or key instead of a traceback (``--debug``
or ``MEDXFER_DEBUG=1`` shows it). Anything else is a bug and keeps its traceback.

This module imports the standard library only (the command line's start-up stays short).
"""

from __future__ import annotations

import re

__all__ = [
    "ConfigError",
    "RunFileError",
    "UnknownNameError",
    "WeightsError",
    "expected_errors",
    "find_expected",
    "one_line",
]


class ConfigError(ValueError):
    """A setting medxfer cannot use: an unknown backbone, a source that names no file, options
    that contradict each other. A ``ValueError``, so code catching those keeps working."""


class UnknownNameError(ConfigError, KeyError):
    """A name absent from a registry (backbone, task, datamodule, weight source).

    A ``KeyError`` too (a registry look-up), but printed as its message, not as a quoted key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsError(ValueError):
    """A weight file that does not fit the architecture (missing, misshaped or unexpected
    backbone tensors), is not weights-only, or holds no tensors; the message names the file."""


class RunFileError(ValueError):
    """A file of a run folder that cannot be used: a checkpoint that is not one, or belongs to
    another model or task; a checkpoint that could not be written (a full disk); a truncated
    or non-numeric ``results.json``; a run folder another ``medxfer fit`` is writing. The
    message names the file (and the key or tensor)."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by the user's files or settings, reported in one line by the command.

    Imported here, when an error is being handled, so that ``medxfer --help`` loads none of the
    modules that define them.
    """
    from medxfer.data.cache import CacheError
    from medxfer.data.images import ImageDecodeError
    from medxfer.data.rle import RLEError
    from medxfer.data.tables import TableError

    return (
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        TableError,
        ImageDecodeError,
        CacheError,
        RLEError,
        WeightsError,
        RunFileError,
        ConfigError,
    )


def find_expected(err: BaseException) -> BaseException | None:
    """``err`` or the first error it was raised from (``__cause__`` / ``__context__``) that is
    an expected one: jsonargparse wraps a task's own error while instantiating the config."""
    kinds = expected_errors()
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return None


#: Lines of jsonargparse's messages that explain its machinery, not the user's mistake.
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value type"
    r"|- Expected a <class 'NoneType'>|tip: |usage: )"
)


def one_line(err: BaseException) -> str:
    """The readable message of ``err`` on one line.

    A DataLoader worker re-raises its error with the worker's traceback in the message: the
    original last line is kept. jsonargparse's union messages are reduced to the user's errors
    (``Parser key "model": ... Option 'lrr' is not accepted``).
    """
    text = str(err)
    if "Original Traceback" in text:  # torch's ExceptionWrapper: keep the original's message
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    parts = [line.strip() for line in text.splitlines()]
    parts = [p.removeprefix("- ") for p in parts if p and not _NOISE.match(p)]
    given = [p for p in parts if p.startswith("Given value:")]
    parts = [p for p in parts if not p.startswith("Given value:")]
    if given and not any("Got value:" in p for p in parts):  # an optional value's bad input
        parts.append("Got value:" + given[0].removeprefix("Given value:"))
    return " ".join(parts)
