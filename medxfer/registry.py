"""One small registry shared by backbones, tasks and datamodules.

A :class:`Registry` is a dict of named entries behind a decorator, in the manner of timm's model
registry. Third-party packages add entries without touching medxfer by exposing a Python
entry point in the registry's group (``medxfer.backbones``, ``medxfer.tasks`` or
``medxfer.datamodules``); the entry point is imported the first time the registry is read (or
by :meth:`Registry.load_plugins`), and importing it runs that package's ``register`` calls.

medxfer's own heavy entries (Lightning tasks and datamodules) are *declared*
(:meth:`Registry.declare`): a name, a one-line description and the ``"module:attr"`` path of the
object, which is imported the first time the entry's ``obj`` is read. ``medxfer list`` reads
names and descriptions without importing Lightning; ``get(name)`` imports what it returns. The
entry points of the ``medxfer`` distribution itself are not loaded by a registry: its entries
are declared (the ``medxfer.datamodules`` entry point exists for the image-reader look-up of
:func:`medxfer.data.images.known_reader`).

The ``medxfer`` LightningCLI loads the task and datamodule plug-ins before parsing, so a config
names a plug-in's class as it names medxfer's own: by its class name (``class_path: PluginTask``,
which jsonargparse resolves among the imported subclasses) or by its full import path. A task or
datamodule registered under another name than its class's is listed under that name but cannot
be written in a config; the CLI warns about it.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import logging
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryEntry", "import_target"]

log = logging.getLogger(__name__)

T = TypeVar("T")


#: The distribution whose entry points a registry does not load: its entries are declared.
_OWN_DISTRIBUTION = "medxfer"

_UNLOADED: Any = object()


def import_target(target: str) -> Any:
    """The object at ``"package.module:attr"`` (``attr`` may be dotted), imported.

    Example:
        >>> import_target("os.path:join") is __import__("os").path.join
        True
    """
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"target {target!r} is not of the form 'package.module:attr'")
    return functools.reduce(getattr, attr.split("."), importlib.import_module(module))


class RegistryEntry(Generic[T]):
    """A registered object with its name, one-line description and free-form metadata.

    A declared entry (:meth:`Registry.declare`) holds the ``"module:attr"`` path of its object in
    ``target`` and imports it the first time ``obj`` is read; ``loaded`` says whether it has.
    """

    __slots__ = ("_obj", "description", "metadata", "name", "target")

    def __init__(
        self,
        name: str,
        obj: T = _UNLOADED,
        description: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        target: str | None = None,
    ) -> None:
        if obj is _UNLOADED and target is None:
            raise ValueError(f"registry entry {name!r} needs an object or a target")
        self.name = name
        self._obj = obj
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.target = target

    @property
    def obj(self) -> T:
        """The registered object (a declared entry imports it here, once)."""
        if self._obj is _UNLOADED:
            self._obj = import_target(self.target)  # type: ignore[arg-type]
        return self._obj

    @property
    def loaded(self) -> bool:
        """Whether ``obj`` is in memory (always, for an entry registered with its object)."""
        return self._obj is not _UNLOADED

    def declares(self, obj: object) -> bool:
        """Whether this is a declared entry not yet loaded whose target is ``obj``'s own
        ``module:qualname`` (its module registering it while being imported)."""
        where = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
        return not self.loaded and self.target == where

    def __repr__(self) -> str:
        what = repr(self._obj) if self.loaded else f"target={self.target!r}"
        return f"RegistryEntry({self.name!r}, {what}, {self.description!r})"


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
        """Register ``obj`` under ``name``; the non-decorator form of :meth:`register`.

        The module a declaration names registering that same object (``@register()`` running
        while :meth:`declare`'s target is imported) completes the declaration silently.
        """
        known = self._entries.get(name)
        if known is not None and known.declares(obj):
            known._obj = obj
            return
        if known is not None:
            warnings.warn(
                f"{self.kind} {name!r} is registered twice; the later one wins", stacklevel=3
            )
        desc = (
            description if description is not None else _first_line(getattr(obj, "__doc__", None))
        )
        self._entries[name] = RegistryEntry(name, obj, desc, dict(metadata))

    def declare(self, name: str, target: str, *, description: str, **metadata: Any) -> None:
        """Register the object at ``target`` (``"package.module:attr"``) under ``name`` without
        importing it: listing reads ``description`` and ``metadata``; the object is imported the
        first time the entry's ``obj`` (or :meth:`get`) is read.

        Example:
            >>> reg = Registry("widget", group="medxfer.widgets")
            >>> reg.declare("join", "os.path:join", description="Join path parts.")
            >>> reg.entry("join").loaded, reg.entry("join").description
            (False, 'Join path parts.')
            >>> reg.get("join") is __import__("os").path.join
            True
        """
        if name in self._entries:
            warnings.warn(
                f"{self.kind} {name!r} is registered twice; the later one wins", stacklevel=2
            )
        self._entries[name] = RegistryEntry(
            name, description=description, metadata=metadata, target=target
        )

    def load_plugins(self) -> None:
        """Import the entry points of the registry's group once; a plug-in that fails to import
        warns instead of raising."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.dist is not None and ep.dist.name == _OWN_DISTRIBUTION:
                continue  # medxfer's own entries are declared
            try:
                ep.load()
            except Exception as err:  # a broken plug-in must not break medxfer itself
                warnings.warn(
                    f"could not load {self.kind} plug-in {ep.name!r} ({ep.value}): {err}",
                    stacklevel=2,
                )

    _load_plugins = load_plugins  # the former private name

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
        """The object registered as ``name`` (imported here when it was declared)."""
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
