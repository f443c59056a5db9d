"""Summarise benchmarks/cifar100_results.sh runs: mean ± std over seeds of +TR / +JP / +LC (test split).

Run: python benchmarks/summarize_results.py RUNS_DIR   (RUNS_DIR holds s0/, s1/, ... each with baseline/, ssal/,
baseline_5ep/, baseline_eqtime/ (benchmarks/cifar100_equal_time.sh) and their eval.json from `ssal evaluate`).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import mean_std, read_eval

RUNS = [
    ("baseline", "baseline (4 epochs)"),
    ("baseline_eqtime", "baseline (SSAL's 4-epoch time)"),
    ("baseline_5ep", "baseline (5 epochs)"),
    ("ssal", "SSAL (4 epochs)"),
]
KEYS = [
    ("tr_top1", "+TR top-1"),
    ("jp_top1", "+JP top-1"),
    ("lc_top1", "+LC top-1"),
    ("tr_top5", "+TR top-5"),
    ("jp_top5", "+JP top-5"),
]


def train_seconds(run: Path) -> float | None:
    """Sum of the per-epoch training times in metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        return sum(float(r["epoch_seconds"]) for r in csv.DictReader(f))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", type=Path)
    args = p.parse_args()
    seeds = sorted(d for d in args.runs.iterdir() if d.is_dir() and d.name.startswith("s"))
    print("| run | " + " | ".join(label for _, label in KEYS) + " | seeds |")
    print("|---|" + "---|" * (len(KEYS) + 1))
    for run, label in RUNS:
        evals = [e for s in seeds if (e := read_eval(s / run)) is not None]
        cells = [mean_std([e.get(k) for e in evals], count=True) for k, _ in KEYS]
        names = ",".join(s.name for s in seeds if (s / run / "eval.json").is_file())
        print(f"| {label} | " + " | ".join(cells) + f" | {names} |")
    print()
    for s in seeds:
        for run, label in RUNS:
            t = train_seconds(s / run)
            if t is not None:
                print(f"- {s.name} {label}: {t:.0f} s of training (sum of epoch times, machine shared)")


if __name__ == "__main__":
    main()
