"""``medxfer list backbones|tasks|datamodules|readers [PATTERN]``: what a config can name.

Backbones come from their registry (names, weight sources and files; no torch or timm is
imported), with the weights folder they are read from, how to move it, and whether each named
source's file is there -- so a user sees before a run which weights it can start from -- grouped
by pre-training method (``WeightSource.method``: supervised, contrastive instance discrimination,
clustering, redundancy reduction / distillation, in-domain / domain-adaptive medical; a source
written by ``medxfer convert`` says which converter), and the backbones ``medxfer export`` wrote
into that folder, under their architecture; tasks,
datamodules and image readers from the entry points that declare them, read
as metadata (:mod:`medxfer.plugins`): nothing is imported, so the listing answers at once.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence

from medxfer.commands.common import CommandParser

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Entry point of ``medxfer list``."""
    from medxfer.plugins import GROUPS, declared

    kinds = ["backbones", *GROUPS]
    parser = CommandParser(prog="medxfer list", description="List registered components.")
    parser.add_argument("what", choices=sorted(kinds))
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    args = parser.parse_args(argv)
    if args.what == "backbones":
        _list_backbones(args.pattern)
        return 0
    eps = {n: ep for n, ep in declared(args.what).items() if fnmatch.fnmatch(n, args.pattern)}
    width = max((len(n) for n in eps), default=0)
    for name, ep in eps.items():
        where = f"  [{ep.dist.name}]" if ep.dist is not None and ep.dist.name != "medxfer" else ""
        print(f"{name:<{width}}  {ep.value}{where}")
    return 0


def _list_backbones(pattern: str) -> None:
    from medxfer.backbones import BACKBONES  # the registry only: neither torch nor timm
    from medxfer.backbones.exported import describe_chain, exported_files
    from medxfer.backbones.sources import METHODS, WEIGHT_SUFFIXES, WEIGHTS_DIR_ENV, weights_dir

    folder = weights_dir()
    exported = exported_files(folder)
    names = BACKBONES.names(pattern)
    sources = [
        (name, source, ws)
        for name in names
        for source, ws in BACKBONES.entry(name).metadata.get("sources", {}).items()
    ]
    present = {id(ws) for *_, ws in sources if (folder / ws.filename).is_file()}
    origin = (
        f"set by ${WEIGHTS_DIR_ENV}"
        if os.environ.get(WEIGHTS_DIR_ENV)
        else f"the default; set ${WEIGHTS_DIR_ENV} to read weights from another folder"
    )
    print(f"weights folder: {folder}{'' if folder.is_dir() else ' (does not exist yet)'}")
    print(f"  ({origin}); {len(present)} of {len(sources)} named weight files present there\n")
    width = max((len(n) for n in [*names, "timm/<name>"]), default=0)
    file_width = max((len(ws.filename) for *_, ws in sources), default=0)
    source_width = max((len(source) for _, source, _ in sources), default=0)
    for name in names:
        print(f"{name:<{width}}  {BACKBONES.entry(name).description}")
        own = [(source, ws) for owner, source, ws in sources if owner == name]
        for method in METHODS:  # grouped by pre-training method, in METHODS' order
            group = [(source, ws) for source, ws in own if ws.method == method]
            if group:
                print(f"{'':<{width}}  [{method}]")
            for source, ws in group:
                mark = "present" if id(ws) in present else "absent "
                how = f"; medxfer convert {ws.convert}" if ws.convert else ""
                print(
                    f"{'':<{width}}    .{source:<{source_width}} {ws.filename:<{file_width}}  "
                    f"{mark}  ({ws.description}{how})"
                )
        if exported.get(name):
            print(f"{'':<{width}}  [exported by medxfer export]")
        for stem, (path, meta) in exported.get(name, {}).items():
            chain = describe_chain(meta.get("chain") or [])
            print(
                f"{'':<{width}}    .{stem:<{source_width}} {path.name:<{file_width}}  present  "
                f"(exported: {chain})"
            )
    timm_dir = folder / "timm"
    timm_files = (
        sorted(p.name for p in timm_dir.iterdir() if p.name.lower().endswith(WEIGHT_SUFFIXES))
        if timm_dir.is_dir()
        else []
    )
    print(f"{'timm/<name>':<{width}}  any timm model, e.g. timm/resnet18, timm/convnext_tiny")
    print(
        f"{'':<{width}}    .timm            {timm_dir}/<name>.safetensors: "
        + (", ".join(timm_files) if timm_files else "none present")
    )
    for arch, files in exported.items():
        if arch.startswith("timm/") and fnmatch.fnmatch(arch, pattern):
            for stem, (path, meta) in files.items():
                chain = describe_chain(meta.get("chain") or [])
                print(
                    f"{'':<{width}}    .{stem:<15} {path.name}  present  ({arch}, exported: {chain})"
                )
