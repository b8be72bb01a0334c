"""A pre-resized image cache in one HDF5 file, and the image sources datasets read through.

Medical images are large (mammograms 2048² and bigger, CheXpert 224k JPEGs); decoding and
resizing them every epoch starves an accelerator. ``medxfer prepare`` decodes every image of a
datamodule once, resizes it to the side its transform starts with (``INTER_AREA``, exactly the
transform's first step), quantises it to uint8 (uint16 for sources with more than 8 bits) and
writes it to an HDF5 file. Datasets then read through an :class:`ImageCache` instead of
:class:`FileImages`; the transform's resize becomes a no-op. An 8-bit cache hands its pixels out
as they are stored (uint8, no float conversion: what the transforms work on), and the transforms
quantise the direct path's resized floats with the same :func:`quantise`, so both paths give the
same 8-bit pixels; a 16-bit cache gives float32 in [0, 1] (mammography keeps its bits), within
half a 16-bit step of the direct path.

A datamodule whose images come with label maps (segmentation masks, a field of view) stores
them beside the pixels: decoded by the datamodule's own function at the image's size, resized
with ``INTER_NEAREST`` (the transforms' mask interpolation: class values are never
interpolated, so the cached masks equal the direct path's exactly) and kept as uint8.

Layout of the file (``FORMAT_VERSION`` 1)::

    pixels    (N, S, S) or (N, S, S, 3) uint8/uint16, one chunk per image, allocated at creation
    status    (N,) uint8: 0 to do, 1 written, 2 bad (its message in ``errors``)
    checksum  (N,) uint32: CRC-32 of each image's bytes, verified on every read
    shape     (N, 2) int32: the source image's (H, W) before resizing
    keys      (N,) str: the absolute, normalised source path of each image
    errors    (N,) str: the decoder's message for bad images
    table     str: the datamodule's tables as CSV (metadata beside the pixels)
    labels    (N, S, S, L) uint8, only with label maps, one chunk per image
    label_checksum (N,) uint32: CRC-32 of each image's label maps
    attrs     format_version, reader, reader_version, side, bits, interpolation, tables;
              with label maps also label_channels, labels, label_interpolation

Every chunk is allocated when the file is created, so writing an image never changes the
file's metadata: a run killed at any moment leaves a valid file whose ``status`` says what is
done, and the next ``prepare`` continues from there. Settings that change pixels (reader and
its version, side, bit depth) are stored and compared on open; a cache built with others is
refused with the command that rebuilds it.
"""

from __future__ import annotations

import io
import logging
import os
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd

from .images import (
    READER_VERSIONS,
    READERS,
    ImageDecodeError,
    image_reader,
    known_reader,
    output_version,
    split_member,
    where,
)

__all__ = [
    "FORMAT_VERSION",
    "READERS",
    "READER_VERSIONS",
    "CacheError",
    "CacheSettings",
    "FileImages",
    "ImageCache",
    "ImageSource",
    "image_key",
    "prepare_cache",
    "quantise",
    "resize_labels",
    "resize_square",
    "source_bits",
]

log = logging.getLogger(__name__)

#: Version of the file layout above.
FORMAT_VERSION = 1

#: Caches with an HDF5 handle open in this process, closed before any fork (see below).
_OPEN: weakref.WeakSet[ImageCache] = weakref.WeakSet()

_REBUILD = "rebuild it with `medxfer prepare -c <your config> {path}` (after deleting it)"


class CacheError(RuntimeError):
    """A cache file is missing, incomplete, corrupt, or was built with other settings."""


def image_key(path: str | os.PathLike[str]) -> str:
    """The key of an image in a cache: its absolute, normalised path."""
    return os.path.normpath(os.path.abspath(path))


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """Resize to ``side`` x ``side`` with ``INTER_AREA``: the first step of every medxfer
    transform (``albumentations.Resize(side, side, cv2.INTER_AREA)`` on float32)."""
    if image.shape[:2] == (side, side):
        return image
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def quantise(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """A float image in [0, 1] as ``bits``-bit pixels (uint8 or uint16), clipped and rounded to
    the nearest level (``np.rint``, not truncated): how the cache stores images, and how the
    transforms quantise the images they decode, so the two paths give the same pixels."""
    top = 2**bits - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.rint(np.clip(image, 0.0, 1.0) * np.float32(top)).astype(dtype)


def resize_labels(labels: np.ndarray, side: int) -> np.ndarray:
    """Resize label maps ``(H, W, L)`` to ``side`` x ``side`` with ``INTER_NEAREST``: what
    every medxfer transform does to masks (``albumentations.Resize``'s ``mask_interpolation``),
    so class values stay exactly the stored ones."""
    if labels.shape[:2] == (side, side):
        return labels
    out = cv2.resize(labels, (side, side), interpolation=cv2.INTER_NEAREST)
    return out.reshape(side, side, labels.shape[2])


#: A datamodule's label-map decoder: ``(row, (H, W) of the decoded image, context)`` -> uint8
#: ``(H, W, L)``, ``row`` being the image's table row; raises ``ImageDecodeError`` naming the
#: file. Must be picklable (a module-level function or a ``functools.partial`` of one): it runs
#: in the decoding processes.
LabelDecoder = Callable[[dict[str, Any], tuple[int, int], str], np.ndarray]


def source_bits(path: str | os.PathLike[str]) -> int:
    """Bits per sample of an image file's stored pixels (8 or 16), from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return 16 if img.mode in ("I;16", "I;16B", "I;16L", "I") else 8
    except (UnidentifiedImageError, OSError):
        pass
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types for non-DICOM files
        raise ImageDecodeError(f"could not read the header of {path}: {err}") from None
    return 16 if int(getattr(ds, "BitsStored", 8)) > 8 else 8


@dataclass(frozen=True)
class CacheSettings:
    """What decides a cache's pixels: the decoder and the side images are resized to.

    Attributes:
        reader: a name declared in the ``medxfer.image_readers`` entry points (``grey``,
            ``rgb``, ``dicom``, ``mammogram`` and plug-ins'; :func:`~medxfer.data.images.image_reader`).
        side: the square side images are stored at.
        label_channels: label maps stored per image (0: images only; segmentation: the mask
            channels and the field of view).
        labels: what the label maps are (their channels and how they were read), compared on
            open like the rest, so a cache of other masks is refused.
    """

    reader: str
    side: int
    label_channels: int = 0
    labels: str = ""

    def __post_init__(self) -> None:
        if not known_reader(self.reader):
            from medxfer.plugins import declared

            known = sorted(declared("readers"))
            raise ValueError(f"unknown reader {self.reader!r}; known: {known}")
        if self.side < 1:
            raise ValueError(f"cache side must be positive, got {self.side}")

    @property
    def reader_version(self) -> int:
        return output_version(self.reader)

    @property
    def channels(self) -> int:
        return 3 if self.reader == "rgb" else 1

    def attrs(self) -> dict[str, Any]:
        """The settings as stored in (and compared with) the file's attributes."""
        return {
            "format_version": FORMAT_VERSION,
            "reader": self.reader,
            "reader_version": self.reader_version,
            "side": self.side,
            "interpolation": "INTER_AREA",
        } | (
            {
                "label_channels": self.label_channels,
                "labels": self.labels,
                "label_interpolation": "INTER_NEAREST",
            }
            if self.label_channels
            else {}
        )


class ImageSource(Protocol):
    """Where a dataset gets its images: ``source(path, context)`` -> ``(H, W)`` or ``(H, W, 3)``
    float32 in [0, 1] (the decoders, a 16-bit cache) or uint8, 0..255 standing for [0, 1] (an
    8-bit cache). The transforms take either
    (:meth:`medxfer.transforms.SeededTransform.prepare`)."""

    def __call__(self, path: str, context: str = "") -> np.ndarray: ...

    def check(self, path: str, context: str = "", decode: bool = False) -> None:
        """Raise :class:`ImageDecodeError` naming the file when it cannot be read."""
        ...


@dataclass
class FileImages:
    """Images decoded from their files on every read (no cache).

    A path ``<file>#<member>`` names one image inside a container file (a CIFAR batch holds
    10,000): its reader decodes the member, and the existence check looks for ``<file>``.
    """

    reader: str

    def __call__(self, path: str, context: str = "") -> np.ndarray:
        return image_reader(self.reader)(path, context)

    def check(self, path: str, context: str = "", decode: bool = False) -> None:
        if decode:
            self(path, context)
        elif not os.path.isfile(split_member(path)[0]):
            raise ImageDecodeError(f"image not found: {where(path, context)}")


def _open(path: str | os.PathLike[str], mode: str = "r") -> Any:
    import h5py

    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise CacheError(
            f"image cache {path} does not exist; build it with `medxfer prepare -c <your config> {path}`"
        ) from None
    except BlockingIOError:
        raise CacheError(
            f"image cache {path} is locked by another process (a `medxfer prepare` still "
            "writing it?); wait for it to finish, or stop it and run prepare again to continue"
        ) from None
    except OSError as err:
        raise CacheError(
            f"image cache {path} is truncated or corrupt ({err}); " + _REBUILD.format(path=path)
        ) from None


def _check_settings(f: Any, path: str, settings: CacheSettings) -> None:
    stored = {k: f.attrs.get(k) for k in settings.attrs()}
    expected = settings.attrs()
    diff = [
        f"{k}: cache {_plain(stored[k])!r}, config {v!r}"
        for k, v in expected.items()
        if _plain(stored[k]) != v
    ]
    if diff:
        raise CacheError(
            f"image cache {path} was built with other settings ({'; '.join(diff)}); "
            + _REBUILD.format(path=path)
        )
    names = ("pixels", "status", "checksum", "keys")
    if settings.label_channels:
        names += ("labels", "label_checksum")
    for name in names:
        if name not in f:
            raise CacheError(
                f"image cache {path} lacks its {name!r} dataset (not a medxfer cache, or "
                "corrupt); " + _REBUILD.format(path=path)
            )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class ImageCache:
    """Read pre-resized images from a cache written by :func:`prepare_cache`.

    Opening checks the settings and that the cache is complete; the HDF5 file itself is opened
    lazily in each process that reads (every DataLoader worker gets its own handle), and every
    read verifies the image's checksum.

    Args:
        path: the ``.h5`` file.
        settings: the settings the datamodule would build the cache with.

    Raises:
        CacheError: missing, truncated, corrupt, incomplete, or other settings.
    """

    def __init__(self, path: str | os.PathLike[str], settings: CacheSettings) -> None:
        self.path = str(path)
        self.settings = settings
        with _open(self.path) as f:
            _check_settings(f, self.path, settings)
            status = f["status"][:]
            todo = int((status == 0).sum())
            if todo:
                raise CacheError(
                    f"image cache {self.path} is incomplete: {len(status) - todo} of "
                    f"{len(status)} images prepared; finish it with `medxfer prepare -c <your "
                    f"config> {self.path}` (it resumes where it stopped)"
                )
            keys = f["keys"].asstr()[:]
            self.checksums = f["checksum"][:]
            self.label_checksums = f["label_checksum"][:] if settings.label_channels else None
            self.shapes = f["shape"][:]
            self.bits = int(f.attrs["bits"])
            self.errors = {
                keys[i]: str(f["errors"].asstr()[i]) for i in np.flatnonzero(status == 2)
            }
        self.index = {k: i for i, k in enumerate(keys)}
        self._file: Any = None
        self._pixels: Any = None
        self._labels: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pixels"], state["_labels"], state["_pid"] = (None,) * 4
        return state

    def _handle(self) -> Any:
        """This process's ``pixels`` dataset (opened on first use in each process)."""
        if self._file is None or self._pid != os.getpid():
            self._file = _open(self.path)
            self._pid = os.getpid()
            self._pixels = self._file["pixels"]
            self._labels = self._file["labels"] if self.settings.label_channels else None
            _OPEN.add(self)
        return self._pixels

    def close(self) -> None:
        """Close this process's handle (the next read reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pixels, self._labels, self._pid = None, None, None, None

    def _row(self, path: str, context: str) -> int:
        key = image_key(path)
        what = where(path, context)
        row = self.index.get(key)
        if row is None:
            raise CacheError(
                f"image {what} is not in the image cache {self.path}, which was prepared for "
                "other tables; " + _REBUILD.format(path=self.path)
            )
        if key in self.errors:
            raise ImageDecodeError(
                f"image {what} could not be decoded when the cache was prepared: {self.errors[key]}"
            )
        return row

    def source_shape(self, path: str) -> tuple[int, int]:
        """``(H, W)`` of the image's file before it was resized into the cache."""
        h, w = self.shapes[self._row(path, "")]
        return int(h), int(w)

    def check(self, path: str, context: str = "", decode: bool = False) -> None:
        """Raise :class:`CacheError` for an image outside the cache and
        :class:`ImageDecodeError` for one that failed to decode when it was prepared."""
        self._row(path, context)

    def __call__(self, path: str, context: str = "") -> np.ndarray:
        """The image, ``(S, S)`` or ``(S, S, 3)``: as stored (uint8) in an 8-bit cache -- the
        transforms work on 8-bit pixels, so a float conversion here would be undone -- and as
        float32 in [0, 1] in a 16-bit one."""
        row = self._row(path, context)
        try:
            pixels = self._handle()[row]
        except (OSError, KeyError, ValueError) as err:
            raise CacheError(
                f"image cache {self.path}: reading {path} (row {row}) failed ({err}); the file "
                "is corrupt; " + _REBUILD.format(path=self.path)
            ) from None
        if zlib.crc32(pixels.tobytes()) != int(self.checksums[row]):
            raise CacheError(
                f"image cache {self.path}: checksum mismatch for {path} (row {row}); the file "
                "is corrupt; " + _REBUILD.format(path=self.path)
            )
        if pixels.dtype == np.uint8:
            return pixels
        return pixels.astype(np.float32) / np.float32(2**self.bits - 1)

    def labels(self, path: str, context: str = "") -> np.ndarray:
        """The image's label maps as stored, uint8 ``(S, S, L)`` (resized nearest-neighbour
        from the datamodule's decoder's output, checksum verified).

        Raises:
            CacheError: the cache holds no label maps, or this image's are corrupt.
        """
        row = self._row(path, context)
        if self.label_checksums is None:
            raise CacheError(
                f"image cache {self.path} holds no label maps (masks); "
                + _REBUILD.format(path=self.path)
            )
        self._handle()
        try:
            labels = self._labels[row]
        except (OSError, KeyError, ValueError) as err:
            raise CacheError(
                f"image cache {self.path}: reading the label maps of {path} (row {row}) failed "
                f"({err}); the file is corrupt; " + _REBUILD.format(path=self.path)
            ) from None
        if zlib.crc32(labels.tobytes()) != int(self.label_checksums[row]):
            raise CacheError(
                f"image cache {self.path}: label checksum mismatch for {path} (row {row}); the "
                "file is corrupt; " + _REBUILD.format(path=self.path)
            )
        return labels


def _close_before_fork() -> None:
    """HDF5 handles must not cross a fork: a DataLoader forking workers after the main process
    has read from a cache (e.g. a probe set read in-process) would hand them the parent's
    handle. Closing them first makes every worker open its own."""
    for cache in list(_OPEN):
        cache.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_before_fork)


@dataclass
class PrepareReport:
    """What one ``prepare_cache`` call did."""

    path: str
    total: int
    written: int
    already_done: int
    bad: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.total} images, {self.written} written now, "
            f"{self.already_done} already done, {len(self.bad)} bad"
        )


Job = tuple[int, str, str, Any]  # row in the cache, path, context, table row (label maps)


def _decode(
    reader: str, side: int, top: int, labels: LabelDecoder | None, jobs: Sequence[Job]
) -> list:
    """Decode, resize and quantise a batch, with its label maps when ``labels`` decodes them
    (runs in a worker process)."""
    decode = image_reader(reader)  # a spawned worker imports the reader's module here
    out = []
    for i, path, context, record in jobs:
        try:
            image = decode(path, context)
            maps = None if labels is None else labels(record, image.shape[:2], context)
        except ImageDecodeError as err:
            out.append((i, None, None, None, str(err)))
            continue
        if top == 255 and reader != "rgb" and source_bits(path) > 8:
            raise CacheError(
                f"{path} ({context}) stores more than 8 bits per pixel but the cache stores 8; "
                "delete the cache and prepare it with --bits 16"
            )
        small = resize_square(image.astype(np.float32), side)
        if maps is not None:
            maps = np.ascontiguousarray(resize_labels(maps.astype(np.uint8), side))
        out.append((i, quantise(small, 8 if top == 255 else 16), image.shape[:2], maps, None))
    return out


def _create(
    path: Path,
    keys: list[str],
    settings: CacheSettings,
    bits: int,
    table: pd.DataFrame | None,
    tables: Sequence[str],
) -> None:
    import h5py

    n, s = len(keys), settings.side
    shape = (n, s, s) if settings.channels == 1 else (n, s, s, 3)
    tmp = path.with_name(path.name + ".creating")
    with h5py.File(tmp, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, *shape[1:]))
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # writes never touch metadata
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dtype = h5py.h5t.NATIVE_UINT8 if bits == 8 else h5py.h5t.NATIVE_UINT16
        h5py.h5d.create(f.id, b"pixels", dtype, h5py.h5s.create_simple(shape), dcpl=dcpl)
        if settings.label_channels:
            lshape = (n, s, s, settings.label_channels)
            lcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            lcpl.set_chunk((1, *lshape[1:]))
            lcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            lcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            h5py.h5d.create(
                f.id, b"labels", h5py.h5t.NATIVE_UINT8, h5py.h5s.create_simple(lshape), dcpl=lcpl
            )
            f.create_dataset("label_checksum", shape=(n,), dtype=np.uint32, fillvalue=0)
            f["label_checksum"][...] = 0
        for name, dshape, dt in (
            ("status", (n,), np.uint8),
            ("checksum", (n,), np.uint32),
            ("shape", (n, 2), np.int32),
        ):
            f.create_dataset(name, shape=dshape, dtype=dt, fillvalue=0)
            f[name][...] = 0  # allocate now, so later writes are raw data only
        f.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("errors", shape=(n,), dtype=h5py.string_dtype())
        if table is not None:
            buf = io.StringIO()
            table.to_csv(buf, index=False)
            f.create_dataset("table", data=buf.getvalue(), dtype=h5py.string_dtype())
        f.attrs.update(settings.attrs())
        f.attrs["bits"] = bits
        f.attrs["tables"] = list(tables)
    os.replace(tmp, path)  # the cache appears only once fully created


def _in_order(decode: Callable[[list[Job]], list], batches: list, workers: int) -> Iterator[list]:
    """``decode`` of each batch, in order; with ``workers`` processes, at most two batches per
    worker in flight (decoded pixels never pile up ahead of the writer)."""
    if workers <= 0:
        yield from map(decode, batches)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(decode, batch))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batches(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def prepare_cache(
    path: str | os.PathLike[str],
    images: pd.DataFrame,
    settings: CacheSettings,
    bits: int | None = None,
    table: pd.DataFrame | None = None,
    tables: Sequence[str] = (),
    skip_bad: bool = False,
    workers: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    labels: LabelDecoder | None = None,
) -> PrepareReport:
    """Decode, resize and store every image of ``images`` in the cache ``path``, resuming an
    interrupted run of the same settings.

    Args:
        path: the ``.h5`` file (created, or continued when it exists with the same settings
            and images).
        images: one row per image: ``path``, and ``line`` / ``source`` naming its table row
            (with ``labels``, also ``record``: the table row given to the decoder).
        settings: reader and side (and the label maps' channels and description).
        bits: 8 or 16 bits per stored sample (default: 16 when the first image's file stores
            more than 8 bits, else 8; colour is always 8).
        table: metadata stored beside the pixels (the datamodule's tables).
        tables: the table files the images came from (stored, shown in messages).
        skip_bad: record undecodable images as bad (the datamodule's ``skip_bad_images`` then
            drops them, counted) instead of failing.
        workers: decoding processes (0: in this process).
        batch_size: images decoded and written between two flushes of the file.
        progress: show a progress bar.
        labels: the label-map decoder (:data:`LabelDecoder`), needed when
            ``settings.label_channels``; a decoding error makes the image bad like its own.

    Raises:
        CacheError: the file exists with other settings or other images.
        ImageDecodeError: a bad image without ``skip_bad`` (what was written is kept: fix the
            file and run again to continue).
    """
    from tqdm.auto import tqdm

    path = Path(path)
    rows = images.assign(_key=[image_key(p) for p in images["path"]]).drop_duplicates("_key")
    keys = list(rows["_key"])
    if not keys:
        raise ValueError("no images to prepare")
    if bool(settings.label_channels) != (labels is not None):
        raise ValueError("label_channels in the settings and a labels decoder go together")
    records = list(rows["record"]) if labels is not None else [None] * len(keys)
    contexts = [f"line {ln} of {src}" for ln, src in zip(rows["line"], rows["source"], strict=True)]
    if not path.exists():
        if bits is None:
            bits = 8 if settings.channels == 3 else source_bits(rows["path"].iloc[0])
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path, keys, settings, bits, table, tables)
    with _open(path, "r+") as f:
        _check_settings(f, str(path), settings)
        stored = f["keys"].asstr()[:]
        if list(stored) != keys:
            raise CacheError(
                f"image cache {path} exists for other images ({len(stored)} stored, "
                f"{len(keys)} asked, {len(set(keys) - set(stored))} of them not in it); delete "
                "it or choose another file"
            )
        if bits is not None and int(f.attrs["bits"]) != bits:
            raise CacheError(
                f"image cache {path} stores {int(f.attrs['bits'])}-bit pixels, {bits} asked; "
                "delete it or choose another file"
            )
        bits = int(f.attrs["bits"])
        status = f["status"][:]
        todo = [
            (i, str(p), contexts[i], records[i])
            for i, p in enumerate(rows["path"])
            if status[i] == 0
        ]
        report = PrepareReport(str(path), len(keys), 0, int((status != 0).sum()))
        report.bad = [str(e) for e in f["errors"].asstr()[status == 2]]
        top = 2**bits - 1
        decode = partial(_decode, settings.reader, settings.side, top, labels)
        pixels_ds, checksum_ds, shape_ds = f["pixels"], f["checksum"], f["shape"]
        labels_ds = f["labels"] if labels is not None else None
        label_sum_ds = f["label_checksum"] if labels is not None else None
        status_ds, errors_ds = f["status"], f["errors"]
        bar = tqdm(
            total=len(keys),
            initial=report.already_done,
            desc=f"prepare {path.name}",
            unit="img",
            disable=not progress,
        )
        try:
            for batch in _in_order(decode, list(_batches(todo, batch_size)), workers):
                done, bad = [], []
                for i, pixels, shape, maps, error in batch:
                    if error is not None:
                        if not skip_bad:
                            raise ImageDecodeError(
                                f"{error}. Fix the file and run `medxfer prepare` again (it "
                                "continues), or set skip_bad_images=true to record and skip it."
                            )
                        errors_ds[i] = error
                        report.bad.append(error)
                        bad.append(i)
                        continue
                    pixels_ds[i] = pixels
                    checksum_ds[i] = zlib.crc32(pixels.tobytes())
                    shape_ds[i] = shape
                    if labels_ds is not None:
                        if maps.shape[2] != settings.label_channels:
                            raise ValueError(
                                f"the label decoder gave {maps.shape[2]} channels for {keys[i]}, "
                                f"the settings say {settings.label_channels}"
                            )
                        labels_ds[i] = maps
                        label_sum_ds[i] = zlib.crc32(maps.tobytes())
                    done.append(i)
                f.flush()  # pixels first, then the status that says they are there
                for value, rows_done in ((1, done), (2, bad)):
                    if rows_done:
                        status_ds[sorted(rows_done)] = value
                f.flush()
                report.written += len(done)
                bar.update(len(batch))
        finally:
            bar.close()
    return report
