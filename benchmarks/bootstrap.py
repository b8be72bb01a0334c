"""Speed of medxfer's vectorised bootstrap AUROC against a per-resample scikit-learn loop, on
the same cases and resamples, in one run (a benchmark, not a test)::

    python benchmarks/bootstrap.py --cases 20000 --resamples 1000

Target: >= 20x. The intervals of both are printed, so the speed-up is for the same answer.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from medxfer.metrics import bootstrap_ci


def sklearn_loop(
    scores: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int
) -> tuple[float, float]:
    """The straightforward bootstrap: draw indices, call roc_auc_score, repeat."""
    rng = np.random.default_rng(seed)
    n = len(scores)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        values.append(roc_auc_score(labels[idx], scores[idx]))
    return tuple(np.percentile(values, [2.5, 97.5]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20_000)
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    labels = (rng.random(args.cases) < 0.2).astype(float)
    scores = rng.normal(labels, 1.0)
    t0 = time.perf_counter()
    ours = bootstrap_ci(scores, labels, n_resamples=args.resamples)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    low, high = sklearn_loop(scores, labels, args.resamples, 0)
    t_loop = time.perf_counter() - t0
    print(f"{args.cases} cases, {args.resamples} resamples")
    print(f"medxfer vectorised   {t_ours:7.2f} s   {ours}")
    print(f"sklearn loop         {t_loop:7.2f} s   [{low:.4f}, {high:.4f}]")
    print(f"speed-up             {t_loop / t_ours:7.1f}x")


if __name__ == "__main__":
    main()
