"""A restricted unpickler: pickles read without running anything the file names.

:mod:`pickle` calls whatever callable a file names while loading it; the standard library's
documented defence is to override :meth:`pickle.Unpickler.find_class`, which
:class:`RestrictedUnpickler` does. Each caller says which globals its files may name:

* dataset pickles (CIFAR's python version, :mod:`medxfer.datamodules.natural.readers`) admit
  builtin values and numpy arrays only (:func:`numpy_globals`);
* the BYOL release (a JAX / Haiku experiment state, :mod:`medxfer.backbones.convert`) also names
  Haiku's immutable dict and the NamedTuples of its experiment and optimizer state; those are
  rebuilt as a plain ``dict`` and as :class:`PickledRecord` (a tuple of the constructor's
  arguments), so neither Haiku, JAX nor the BYOL code is imported or run.

Any other global is refused before it is loaded, with the file and the global's name.

Why by hand: ``numpy.load``'s ``allow_pickle=False`` refuses object arrays but not a pickled
dict, and ``torch.load(weights_only=True)`` admits torch types, not numpy's or Haiku's.
"""

from __future__ import annotations

import codecs
import functools
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PickledRecord", "RestrictedUnpickler", "numpy_globals"]


def numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals that rebuild a numpy array, scalar or dtype (numpy 1 and 2 module names), and
    ``_codecs.encode``, with which Python 3 writes bytes at protocol 2 (a pure function of text
    to bytes)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]

    found: dict[tuple[str, str], Callable[..., Any]] = {("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[module, "_reconstruct"] = _reconstruct
        found[module, "scalar"] = scalar
    found["numpy", "ndarray"] = np.ndarray
    found["numpy", "dtype"] = np.dtype
    return found


class PickledRecord(tuple):
    """Stand-in for a named type the file names (a NamedTuple of a training state): the
    positional arguments it was built with, as a tuple; ``pickled_type`` says which type.
    Building one runs nothing from the file."""

    pickled_type = "?"

    def __new__(cls, *args: Any) -> PickledRecord:
        return super().__new__(cls, args)

    def __init__(self, *args: Any) -> None:
        del args  # the arguments are the tuple itself


@functools.cache
def _record_type(module: str, name: str) -> type[PickledRecord]:
    return type(name, (PickledRecord,), {"pickled_type": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals a file format is known to hold.

    Args:
        file: the binary stream.
        source: the file's name, for the error.
        allowed: ``(module, name)`` -> the object to use for it.
        records: module prefixes (``"byol."``) whose names are rebuilt as :class:`PickledRecord`.
        error: the exception raised for a refused global (a subclass of ``Exception`` taking
            one message).
        what: the end of the refusal's message: what the format may hold.
        encoding: how Python 2 ``str`` values are read (``"bytes"`` keeps them as bytes).
    """

    def __init__(
        self,
        file: io.BufferedIOBase,
        source: str,
        allowed: Mapping[tuple[str, str], Any],
        *,
        records: tuple[str, ...] = (),
        error: type[Exception] = pickle.UnpicklingError,
        what: str = "the format holds only plain values",
        encoding: str = "bytes",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.allowed = dict(allowed)
        self.records = records
        self.error = error
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[module, name]
        if module.startswith(self.records):
            return _record_type(module, name)
        raise self.error(
            f"{self.source}: refused to load {module}.{name}: {self.what} (nothing from the "
            "file was run)"
        )
