"""Grouping speed (issue goal: C=1000, k=500 in under 1 s on a 2-core CPU).

Run: python benchmarks/bench_grouping.py [--repeats 5]
"""

from __future__ import annotations

import argparse

from ssal.bench import grouping_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"{'C':>5} {'k':>4} {'criterion':>9} {'refine':>6} {'seconds':>8}")
    for C, k in [(100, 20), (100, 50), (200, 100), (1000, 200), (1000, 500)]:
        for crit in ("join", "split"):
            print(f"{C:>5} {k:>4} {crit:>9} {'no':>6} {grouping_seconds(C, k, args.repeats, crit):8.3f}")
    print(f"{1000:>5} {500:>4} {'split':>9} {'yes':>6} {grouping_seconds(1000, 500, 1, 'split', refine=True):8.3f}")


if __name__ == "__main__":
    main()
