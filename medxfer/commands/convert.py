"""``medxfer convert byol|simclr IN OUT.safetensors``: a ResNet-50 release that is not a PyTorch
file (BYOL's JAX pickle, SimCLR's TensorFlow checkpoints) as a torchvision-layout
``.safetensors`` file, read without running anything from the download
(:func:`medxfer.backbones.convert.convert_release`). Put the output in the weights folder under
the source's file name (``medxfer list backbones resnet50``) and it loads as ``resnet50.byol``,
``resnet50.simclr-v1`` or ``resnet50.simclr-v2``; or pass it as ``pretrained: OUT``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medxfer.commands.common import CommandParser

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    """Entry point of ``medxfer convert``."""
    from medxfer.backbones.convert import CONVERTERS, convert_release  # numpy, not torch

    p = CommandParser(
        prog="medxfer convert",
        description="Convert a BYOL (JAX) or SimCLR (TensorFlow) ResNet-50 release to "
        "torchvision-layout .safetensors. "
        + "; ".join(f"{kind}: IN is {what}" for kind, what in CONVERTERS.items()),
    )
    p.add_argument("kind", choices=sorted(CONVERTERS), help="which release")
    p.add_argument("source", type=Path, help="the release file (or checkpoint prefix)")
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    args = p.parse_args(argv)
    from medxfer.backbones import BACKBONES

    report = convert_release(args.kind, args.source, args.out, args.force)
    sources = BACKBONES.entry("resnet50").metadata["sources"]
    names = " or ".join(
        f"{ws.filename} (resnet50.{s})" for s, ws in sources.items() if ws.convert == args.kind
    )
    dropped = ", ".join(report.dropped[:6]) + (
        f", ... (+{len(report.dropped) - 6})" if len(report.dropped) > 6 else ""
    )
    print(
        f"wrote {report.out}: {report.tensors} tensors in torchvision resnet50 layout from "
        f"{report.source}; left out {len(report.dropped)}: {dropped or 'nothing'}"
    )
    print(f"use it as pretrained: {report.out}, or put it in the weights folder as {names}")
    return 0
