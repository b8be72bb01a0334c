"""A stand-in for ``medxfer fit`` in the study executor tests: it takes the same command lines
(``... --seed_everything=K --trainer.default_root_dir=DIR ...`` or ``--resume DIR``), counts
steps into ``DIR/steps.txt`` and ``DIR/checkpoints/last.ckpt`` (the last step done), writes
``results.json`` at the end, and on SIGTERM stops after the current step, as ``medxfer fit``
does (``last.ckpt`` written, exit status 143).

Environment: ``FAKE_FIT_STEPS`` (default 5), ``FAKE_FIT_SLEEP`` seconds per step (default 0),
``FAKE_FIT_DIE`` = ``seed<k>:<step>``: that replica dies (exit 9) after that step on its first
run (not when resumed), as a killed run would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    resumed = "--resume" in argv
    if resumed:
        run_dir = Path(argv[argv.index("--resume") + 1])
        config = json.loads((run_dir / "config.yaml").read_text())
    else:
        opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        run_dir = Path(opts["trainer.default_root_dir"])
        config = {"argv": argv, "seed": int(opts["seed_everything"])}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(json.dumps(config))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(exist_ok=True)
    start = int(ckpt.read_text()) if resumed else 0
    total = int(os.environ.get("FAKE_FIT_STEPS", "5"))
    die = os.environ.get("FAKE_FIT_DIE", "")
    for step in range(start + 1, total + 1):
        time.sleep(float(os.environ.get("FAKE_FIT_SLEEP", "0")))
        with open(run_dir / "steps.txt", "a") as f:
            f.write(f"{step}\n")
        ckpt.write_text(str(step))
        if not resumed and die == f"seed{config['seed']}:{step}":
            os._exit(9)
        if stop:
            return 143
    result = {"test/a/auroc": 0.5 + config["seed"] / 100}
    (run_dir / "results.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
