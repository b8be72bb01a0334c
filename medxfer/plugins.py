"""Plug-ins as entry points: medxfer's built-in tasks, datamodules and image readers are declared
in its ``pyproject.toml`` exactly as a third-party package declares its own, one line each::

    [project.entry-points."medxfer.datamodules"]
    ChestXrayDataModule = "medxfer.datamodules.chest_xray.datamodule:ChestXrayDataModule"

The entry point's name is what a user writes (a config's ``class_path``, a datamodule's
``reader``); its value is the object's import path. Listing reads this metadata only
(``importlib.metadata``, no import of torch); :func:`load` imports one object, :func:`load_all`
all of a kind (what the LightningCLI does before parsing, so ``class_path: PluginTask``
resolves). Backbones keep their timm-like registry (:mod:`medxfer.backbones`), whose
third-party entries load through the ``medxfer.backbones`` group.

As pytest does for its plug-ins: one declaration per plug-in, no second table of names.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["GROUPS", "declared", "load", "load_all"]

#: The entry-point group of each kind of plug-in.
GROUPS = {
    "tasks": "medxfer.tasks",
    "datamodules": "medxfer.datamodules",
    "readers": "medxfer.image_readers",
}


def declared(kind: str) -> dict[str, EntryPoint]:
    """The entry points of ``kind`` (a key of :data:`GROUPS`) by name, sorted, without
    importing any of them. A name declared by two distributions warns; the later one wins."""
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        known = out.get(ep.name)
        if known is not None and known.value != ep.value:
            warnings.warn(
                f"{kind[:-1]} {ep.name!r} is declared twice ({known.value}, {ep.value}); "
                "the later one wins",
                stacklevel=2,
            )
        out[ep.name] = ep
    return dict(sorted(out.items()))


def load(kind: str, name: str) -> Any:
    """The object declared as ``name`` in the group of ``kind``, imported.

    Raises:
        medxfer.errors.UnknownNameError: no such name (the message lists close ones).
    """
    eps = declared(kind)
    if name not in eps:
        from medxfer.errors import UnknownNameError

        close = [n for n in eps if name.lower() in n.lower() or n.lower() in name.lower()]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise UnknownNameError(
            f"unknown {kind[:-1]} {name!r}.{hint} `medxfer list {kind}` prints all of them."
        )
    return eps[name].load()


def load_all(kind: str) -> dict[str, Any]:
    """Every object of ``kind``, imported, by name. A third-party plug-in that fails to import
    warns instead of raising (a broken package must not break medxfer); one of medxfer's own
    raises its error (a bug to see, not a warning to miss)."""
    out: dict[str, Any] = {}
    for name, ep in declared(kind).items():
        try:
            out[name] = ep.load()
        except Exception as err:
            if ep.dist is None or ep.dist.name == "medxfer":
                raise
            warnings.warn(f"could not load {kind[:-1]} {name!r} ({ep.value}): {err}", stacklevel=2)
    return out
