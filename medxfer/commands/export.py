"""``medxfer export RUN_OR_CKPT OUT.safetensors``: a task's backbone as a weight file that
records its architecture, input normalisation and the chain of weights and data it came from
(:func:`medxfer.backbones.export.export_backbone`); ``pretrained: OUT.safetensors`` (or its
stem, once it is in the weights folder) starts the next run from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medxfer.commands.common import CommandParser
from medxfer.errors import ConfigError

__all__ = ["main", "run_checkpoint"]


def run_checkpoint(path: Path, which: str = "last") -> Path:
    """The checkpoint to export: ``path`` itself (a ``.ckpt``), or in a run folder its
    ``last.ckpt`` (``which="last"``) or its newest ``best*.ckpt`` (``which="best"``)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    found = sorted(
        path.rglob("last.ckpt" if which == "last" else "best*.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        others = sorted(p.name for p in path.rglob("*.ckpt"))
        raise ConfigError(
            f"{path}: no {'last.ckpt' if which == 'last' else 'best*.ckpt'} in the run folder "
            f"(checkpoints: {', '.join(others) or 'none'}); give the .ckpt file itself"
        )
    return found[-1]


def main(argv: Sequence[str]) -> int:
    """Entry point of ``medxfer export``."""
    p = CommandParser(
        prog="medxfer export",
        description="Write a run's backbone as .safetensors with its architecture, input "
        "normalisation and weights chain.",
    )
    p.add_argument("run", type=Path, help="a run folder or a .ckpt file")
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="in a run folder")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    args = p.parse_args(argv)
    from medxfer.backbones.export import export_backbone  # after parsing: --help needs no torch
    from medxfer.backbones.exported import describe_chain

    checkpoint = run_checkpoint(args.run, args.checkpoint)
    meta = export_backbone(checkpoint, args.out, args.force)
    chain = describe_chain(meta["chain"])
    print(f"wrote {args.out} ({meta['architecture']}, from {checkpoint}; chain: {chain})")
    return 0
