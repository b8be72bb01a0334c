"""``medxfer list backbones|tasks|datamodules|readers [PATTERN]``: what a config can name.

Backbones come from their registry (names, weight sources and files; no torch or timm is
imported); tasks, datamodules and image readers from the entry points that declare them, read
as metadata (:mod:`medxfer.plugins`): nothing is imported, so the listing answers at once.
"""

from __future__ import annotations

import fnmatch
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

    names = BACKBONES.names(pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        entry = BACKBONES.entry(name)
        print(f"{name:<{width}}  {entry.description}")
        for source, ws in entry.metadata.get("sources", {}).items():
            print(f"{'':<{width}}    .{source:<15} {ws.filename}  ({ws.description})")
    print(f"{'timm/<name>':<{width}}  any timm model, e.g. timm/resnet18, timm/convnext_tiny")
