"""``make demo``: synthetic CheXpert- and NIH-format data (written when absent), a short CPU
fine-tune, then in-domain and shifted-domain results side by side
(``python -m medxfer.commands.demo``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from medxfer.commands import main as cli_main

__all__ = ["main"]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "chexpert_demo.yaml"
DATA = Path("data/synthetic")


def main(argv: list[str] | None = None) -> int:
    """Run the demo from the current folder; extra arguments go to ``medxfer fit``."""
    start = time.perf_counter()
    if (
        not (DATA / "chexpert" / "CheXpert-v1.0-synthetic" / "train.csv").is_file()
        or not (DATA / "nih" / "Data_Entry_2017_v2020.csv").is_file()
    ):
        rc = cli_main(["synthesize", "cxr", str(DATA)])
        if rc:
            return rc  # the error is printed: `make demo` fails with it
    config = CONFIG if CONFIG.is_file() else Path("configs/chexpert_demo.yaml")
    rc = cli_main(["fit", "-c", str(config), *(argv if argv is not None else sys.argv[1:])])
    if rc:
        return rc
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
