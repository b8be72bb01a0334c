"""The backbone registry: a dict of named entries behind a decorator, in the manner of timm's
model registry.

Backbones are cheap to list (their factories import timm only when called), so they keep a
registry with metadata (weight sources, files, descriptions) beside each entry, as timm keeps
its pretrained configs. Third-party packages add backbones without touching medxfer by exposing
a Python entry point in the ``medxfer.backbones`` group; it is imported the first time the
registry is read (or by :meth:`Registry.load_plugins`), and importing it runs that package's
``register`` calls. Tasks, datamodules and image readers are entry points themselves
(:mod:`medxfer.plugins`), not registry entries.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


class RegistryEntry(Generic[T]):
    """A registered object with its name, one-line description and free-form metadata."""

    __slots__ = ("description", "metadata", "name", "obj")

    def __init__(
        self, name: str, obj: T, description: str = "", metadata: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.obj = obj
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"RegistryEntry({self.name!r}, {self.obj!r}, {self.description!r})"


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
        >>> reg.names(), reg.entry("spinner").description
        (['spinner'], 'A widget that spins.')
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

    def entry(self, name: str) -> RegistryEntry[T]:
        """The entry registered as ``name``; absent: :class:`~medxfer.errors.UnknownNameError` (a
        ``KeyError``) listing close names."""
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            close = [
                n for n in self._entries if name.lower() in n.lower() or n.lower() in name.lower()
            ]
            hint = f" Close names: {', '.join(close)}." if close else ""
            from medxfer.errors import UnknownNameError

            raise UnknownNameError(
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
