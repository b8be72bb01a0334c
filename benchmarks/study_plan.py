"""``medxfer study plan`` of the benchmark of pre-trained ResNet-50s (studies/
benchmark_resnet50.yaml: 147 runs x 10 seeds = 1,470 replicas) against a study folder where
every replica is done, in a fresh process (a benchmark, not a test)::

    python benchmarks/study_plan.py --repeats 3

The folder is written to a temporary directory (each replica's ``results.json`` with 14
per-label AUROCs); the best wall time of ``--repeats`` runs is printed against the target of
2 s. Plan reads the study file, stats the config files and reads every ``results.json`` with
the standard library (``medxfer.results.read_results``): no torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "benchmark_resnet50.yaml"
TARGET_S = 2.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from medxfer.study.executors import prepare
    from medxfer.study.spec import load_study

    with tempfile.TemporaryDirectory() as tmp:
        plan = load_study(STUDY, out=Path(tmp) / "benchmark")
        prepare(plan, plan.replicas())
        result = {f"test/chestxray14/auroc/label{i}": 0.5 for i in range(14)}
        for replica in plan.replicas():
            replica.run_dir.mkdir(parents=True)
            (replica.run_dir / "results.json").write_text(json.dumps(result))
        cmd = [sys.executable, "-m", "medxfer", "study", "plan", str(STUDY), "--out", str(plan.out)]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
            times.append(time.perf_counter() - start)
        print(out.splitlines()[-1])
        best = min(times)
        print(f"medxfer study plan, {len(plan.replicas())} replicas all done: best of "
              f"{args.repeats} {best:.2f} s (target <= {TARGET_S:.0f} s: "
              f"{'met' if best <= TARGET_S else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
