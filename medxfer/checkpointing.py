"""Checkpoint files and the run folder: writing without Lightning's in-memory copy, checking a
checkpoint before a run loads it, and one writer per run folder.

Lightning's default :class:`~lightning.fabric.plugins.io.torch_io.TorchCheckpointIO` serialises
every checkpoint into a :class:`io.BytesIO` first and then copies the buffer into an fsspec
transaction (``_atomic_save``): for a ResNet-18 with its SGD momentum (90 MB) that is about
0.3 s more per checkpoint than ``torch.save`` to the file (measured on the 2-core CI machine,
see docs/performance.md), i.e. 5-7 % of a short epoch, since ``ModelCheckpoint`` writes one
every epoch. :class:`LocalCheckpointIO` writes a local checkpoint with ``torch.save`` straight
into a temporary file beside the target and renames it into place (``os.replace``, atomic on
POSIX and Windows), so a run killed mid-write still never leaves a truncated checkpoint; remote
paths (``s3://`` ...) keep Lightning's way. The bytes written are the same ``torch.save``
output as Lightning's.

``medxfer fit`` installs it (:func:`use_local_checkpoint_io`) unless the user chose a checkpoint
plug-in of their own. A write that fails for lack of space (``ENOSPC``, a quota) is a
:class:`~medxfer.errors.RunFileError` naming the checkpoint, and leaves the previous one intact.

:func:`check_checkpoint` reads a ``--ckpt_path`` before Lightning does (memory-mapped, so a
large file costs little) to name the file when it is not a checkpoint (a text file, a truncated
copy) or holds another model's tensors (a checkpoint of another task or backbone): Lightning
itself fails deep inside ``load_state_dict`` with a traceback.

:class:`RunFolderLock` keeps a second ``medxfer fit`` out of a run folder that one is writing
(``fcntl.flock`` on a lock file in it, which the OS releases when the holder dies, so a killed
run never leaves a stale lock).
"""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from medxfer.errors import RunFileError, one_line

__all__ = [
    "RUN_LOCK",
    "LocalCheckpointIO",
    "RunFolderLock",
    "check_checkpoint",
    "read_checkpoint",
    "use_local_checkpoint_io",
]

#: The name ending of the lock file beside a run folder that ``medxfer fit`` holds (``flock``).
RUN_LOCK = ".medxfer.lock"

#: ``OSError`` numbers of a write that failed for lack of space: a full disk, a quota.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LocalCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` that saves local files with ``torch.save`` into a temporary
    file and ``os.replace`` (no in-memory copy of the checkpoint); loading is unchanged."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically; remote paths go to Lightning's writer.

        Raises:
            TypeError: ``storage_options`` is given (as Lightning's ``TorchCheckpointIO``).
            RunFileError: the disk (or the user's quota) is full; the old file is kept.
        """
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)
        except BaseException as err:
            partial.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in _NO_SPACE:
                raise RunFileError(
                    f"{target}: the checkpoint could not be written ({os.strerror(err.errno)}); "
                    "free space and resume the run from its last checkpoint"
                ) from err
            raise


def use_local_checkpoint_io(trainer: L.Trainer) -> None:
    """Give ``trainer`` a :class:`LocalCheckpointIO` when it would use Lightning's default
    ``TorchCheckpointIO``; a checkpoint plug-in the user chose (async, sharded, cloud) is kept."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = LocalCheckpointIO()


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint in ``path``, memory-mapped (its tensors are not read until used): a
    ``torch.save`` zip archive that loads weights-only, with a ``state_dict``.

    Raises:
        FileNotFoundError, IsADirectoryError: ``path`` is missing or a folder.
        RunFileError: not a checkpoint (a text file, a truncated copy), or no ``state_dict``.
    """
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(f"checkpoint {file} is a folder, not a checkpoint file")
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {file} not found")
    if not zipfile.is_zipfile(file):
        raise RunFileError(
            f"checkpoint {file} is not a checkpoint (not the zip archive torch.save writes: "
            "a text file, or a truncated copy?)"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise RunFileError(f"checkpoint {file} cannot be read: {one_line(err)[:160]}") from err
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise RunFileError(f"checkpoint {file} holds no 'state_dict' (not a Lightning checkpoint)")
    return state


def check_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Check that ``path`` is a checkpoint of ``model``: :func:`read_checkpoint`, and its
    ``state_dict`` has exactly ``model``'s tensors with their shapes.

    Read memory-mapped (the tensors are not copied); Lightning loads the file again for the run.

    Raises:
        FileNotFoundError, IsADirectoryError: ``path`` is missing or a folder.
        RunFileError: not a checkpoint (:func:`read_checkpoint`), or a checkpoint of another
            model (its missing, unexpected and misshaped tensors named).
    """
    file = Path(path)
    tensors = read_checkpoint(file)["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    misshaped = [
        f"{k} {tuple(tensors[k].shape)} (the model's: {tuple(v.shape)})"
        for k, v in own.items()
        if k in tensors and hasattr(tensors[k], "shape") and tensors[k].shape != v.shape
    ]
    problems = [
        f"{len(names)} {what} (first: {names[0]})"
        for names, what in (
            (missing, "of the model's tensors missing"),
            (unexpected, "tensors the model has no place for"),
            (misshaped, "of another shape"),
        )
        if names
    ]
    if problems:
        raise RunFileError(
            f"checkpoint {file} is not a checkpoint of this {type(model).__name__} (another "
            f"task, backbone or label set?): {'; '.join(problems)}"
        )


class RunFolderLock:
    """An exclusive lock on a run folder while ``medxfer fit`` writes into it.

    ``fcntl.flock`` on ``.<folder name>`` + :data:`RUN_LOCK` beside the folder (not in it: the
    lock is taken before the logger starts, which would otherwise warn about a folder that is
    not empty -- and empty a running fit's ``metrics.csv`` before the lock refused), without
    waiting: the OS releases it when
    the holder exits or is killed (no stale lock), and it holds across processes on one machine
    and on network file systems that support ``flock``. Where the file system has no locks
    (``ENOLCK``, ``ENOSYS``, ``EOPNOTSUPP``), or off POSIX, the run goes on unlocked with a
    warning. The lock file names the holder's PID, for the error message.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, RunFolderLock(d):
        ...     pass
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The lock file: ``.<folder name>.medxfer.lock`` in the folder's parent."""
        return self.folder.parent / f".{self.folder.name}{RUN_LOCK}"

    def acquire(self) -> RunFolderLock:
        """Take the lock.

        Raises:
            RunFileError: another process holds it (the message names the folder and PID).
        """
        import logging

        try:
            import fcntl
        except ImportError:  # Windows
            logging.getLogger(__name__).warning("run folder %s not locked (no fcntl)", self.folder)
            return self
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # held until release()
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            file.seek(0)
            holder = file.read().strip() or "?"
            file.close()
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFileError(
                    f"run folder {self.folder} is in use by another medxfer fit (PID {holder}): "
                    "wait for it to end, or write this run elsewhere (another logger "
                    "save_dir / version, or trainer.default_root_dir)"
                ) from err
            logging.getLogger(__name__).warning(
                "run folder %s not locked (%s): make sure no other fit writes there",
                self.folder,
                os.strerror(err.errno or 0),
            )
            return self
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Release the lock (closing the file releases the ``flock``); idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
