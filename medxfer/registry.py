"""One small registry shared by backbones, tasks and datamodules.

A :class:`Registry` is a dict of named entries behind a decorator, in the manner of timm's model
registry. Third-party packages add entries without touching medxfer by exposing a Python
entry point in the registry's group (``medxfer.backbones``, ``medxfer.tasks`` or
``medxfer.datamodules``); the entry point is imported the first time the registry is read (or
by :meth:`Registry.load_plugins`), and importing it runs that package's ``register`` calls.

The ``medxfer`` LightningCLI loads the task and datamodule plug-ins before parsing, so a config
names a plug-in's class as it names medxfer's own: by its class name (``class_path: PluginTask``,
which jsonargparse resolves among the imported subclasses) or by its full import path. A task or
datamodule registered under another name than its class's is listed under that name but cannot
be written in a config; the CLI warns about it.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryEntry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A registered object with its name, one-line description and free-form metadata."""

    name: str
    obj: T
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


class Registry(Generic[T]):
    """A named collection of classes or factories.

    Args:
        kind: what the registry holds, used in messages (``"backbone"``).
        group: the entry-point group through which plug-ins register.

    Example:
        >>> reg = Registry("widget", group="medxfer.widgets")
        >>> @reg.register()
        ... def spinner():
        ...     '''A widget that spins.'''
        >>> reg.names()
        ['spinner']
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._plugins_loaded = False

    def register(
        self, name: str | None = None, *, description: str | None = None, **metadata: Any
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``).

        The description defaults to the first line of the object's docstring. Registering a
        name twice warns and keeps the newer entry (a plug-in may override a built-in).
        """

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj, description=description, **metadata)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: T, *, description: str | None = None, **metadata: Any) -> None:
        """Register ``obj`` under ``name``; the non-decorator form of :meth:`register`."""
        if name in self._entries:
            warnings.warn(
                f"{self.kind} {name!r} is registered twice; the later one wins", stacklevel=3
            )
        desc = (
            description if description is not None else _first_line(getattr(obj, "__doc__", None))
        )
        self._entries[name] = RegistryEntry(name, obj, desc, dict(metadata))

    def load_plugins(self) -> None:
        """Import the entry points of the registry's group once; a plug-in that fails to import
        warns instead of raising."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            try:
                ep.load()
            except Exception as err:  # a broken plug-in must not break medxfer itself
                warnings.warn(
                    f"could not load {self.kind} plug-in {ep.name!r} ({ep.value}): {err}",
                    stacklevel=2,
                )

    _load_plugins = load_plugins  # the former private name

    def entry(self, name: str) -> RegistryEntry[T]:
        """The entry registered as ``name``; ``KeyError`` lists close names when absent."""
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            close = [
                n for n in self._entries if name.lower() in n.lower() or n.lower() in name.lower()
            ]
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} `medxfer list {self.kind}s` prints all of them."
            ) from None

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        return self.entry(name).obj

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        self.load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[RegistryEntry[T]]:
        return iter(self.entry(n) for n in self.names())

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)
