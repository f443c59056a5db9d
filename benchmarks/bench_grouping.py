"""Grouping speed (issue goal: C=1000, k=500 in under 1 s on a 2-core CPU).

Run: python benchmarks/bench_grouping.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssal.grouping import group_from_confusion


def synthetic_confusion(C: int, seed: int = 0) -> np.ndarray:
    """A confusion matrix with a strong diagonal and sparse, heavy-tailed off-diagonal counts."""
    rng = np.random.default_rng(seed)
    m = (rng.random((C, C)) ** 8 * 10).round()
    m[np.arange(C), np.arange(C)] += 50
    return m


def time_grouping(C: int, k: int, criterion: str = "join", repeats: int = 5, refine: bool = False) -> float:
    """Best-of-``repeats`` wall time in seconds of one ``group_from_confusion`` call."""
    conf = synthetic_confusion(C)
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        group_from_confusion(conf, k, criterion, seed=r, refine=refine)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{'C':>5} {'k':>4} {'criterion':>9} {'refine':>6} {'seconds':>8}")
    for C, k in [(100, 20), (100, 50), (200, 100), (1000, 200), (1000, 500)]:
        for crit in ("join", "split"):
            print(f"{C:>5} {k:>4} {crit:>9} {'no':>6} {time_grouping(C, k, crit, args.repeats):8.3f}")
    print(f"{1000:>5} {500:>4} {'split':>9} {'yes':>6} {time_grouping(1000, 500, 'split', 1, refine=True):8.3f}")


if __name__ == "__main__":
    main()
