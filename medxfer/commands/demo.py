"""``make demo``: synthetic CheXpert- and NIH-format data (written when absent), a short CPU
fine-tune, then in-domain and shifted-domain results side by side
(``python -m medxfer.commands.demo``).

The console shows each step: the data written, one progress line per epoch, the results
table, and at the end where the run folder is and the commands to try next.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from medxfer import artifacts
from medxfer.commands import main as cli_main

__all__ = ["main"]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "chexpert_demo.yaml"
DATA = Path("data/synthetic")
#: Where the demo config writes its runs (its ``default_root_dir`` / logger ``save_dir``).
RUNS = Path("runs/chexpert_demo")


def main(argv: list[str] | None = None) -> int:
    """Run the demo from the current folder; extra arguments go to ``medxfer fit``."""
    start = time.perf_counter()
    if (
        not (DATA / "chexpert" / "CheXpert-v1.0-synthetic" / "train.csv").is_file()
        or not (DATA / "nih" / "Data_Entry_2017_v2020.csv").is_file()
    ):
        print(f"[demo] writing synthetic CheXpert- and NIH-format data to {DATA}", flush=True)
        rc = cli_main(["synthesize", "cxr", str(DATA)])
        if rc:
            return rc  # the error is printed: `make demo` fails with it
    config = CONFIG if CONFIG.is_file() else Path("configs/chexpert_demo.yaml")
    before = set(RUNS.glob(f"**/{artifacts.RESULTS_JSON}"))
    print(f"[demo] medxfer fit -c {config} (a ResNet-18 from random init, on CPU)", flush=True)
    rc = cli_main(["fit", "-c", str(config), *(argv if argv is not None else sys.argv[1:])])
    if rc:
        return rc
    print(f"[demo] finished in {time.perf_counter() - start:.0f} s", flush=True)
    new = sorted(set(RUNS.glob(f"**/{artifacts.RESULTS_JSON}")) - before)
    if new:
        run = new[-1].parent
        best = sorted((run / artifacts.CHECKPOINTS_DIR).glob("best-*.ckpt"))
        ckpt = best[-1] if best else run / artifacts.CHECKPOINTS_DIR / artifacts.LAST_CKPT
        print(
            f"[demo] run folder: {run} ({artifacts.RESULTS_MD}, {artifacts.ANALYSIS_DIR}/, "
            f"{artifacts.CHECKPOINTS_DIR}/)\n"
            f"next: medxfer predict -c {config} --ckpt_path {ckpt}   (per-case probabilities)\n"
            "      medxfer study run studies/demo.yaml   (this demo at 2 training fractions x "
            "3 seeds; `medxfer study plan` lists them)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
