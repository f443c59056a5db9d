"""Paper Fig. 5 at small scale: validation top-1 per epoch, baseline vs SSAL, mean ± std over seeds.

Run: python benchmarks/plot_convergence.py RUNS_DIR --out convergence.png [--ratio R]
RUNS_DIR holds s0/, s1/, ... with baseline/, ssal/ (and optionally baseline_eqtime/, baseline_5ep/) from
benchmarks/cifar100_results.sh and cifar100_equal_time.sh. Left: against epochs (the paper's view). Right: against
compute in baseline-epoch units (an SSAL epoch costs R baseline epochs, R from OUT/step_cost.json or --ratio; an
epoch of baseline_eqtime is its trainer.limit_train_batches of an epoch): the equal-wall-time view.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml

RUNS = [
    ("baseline", "baseline 4 ep", "tab:purple", "f_top1"),
    ("baseline_eqtime", "baseline, SSAL's time", "tab:gray", "f_top1"),
    ("baseline_5ep", "baseline 5 ep", "tab:blue", "f_top1"),
    ("ssal", "SSAL 4 ep (+TR)", "tab:red", "f_top1"),
    ("ssal", "SSAL 4 ep (+JP)", "tab:orange", "jp_top1"),
]


def curves(runs: Path, name: str, key: str) -> np.ndarray:
    """(seeds, epochs) validation accuracies of one run name over the seeds that have it."""
    rows = []
    for s in sorted(d for d in runs.iterdir() if d.is_dir() and d.name.startswith("s")):
        path = s / name / "metrics.csv"
        if path.is_file():
            with path.open() as f:
                rows.append([float(r[key]) for r in csv.DictReader(f) if r.get(key)])
    n = min((len(r) for r in rows), default=0)
    return np.array([r[:n] for r in rows])


def epoch_fraction(runs: Path, name: str) -> float:
    """trainer.limit_train_batches of the run (1.0 for full epochs)."""
    for cfg in sorted(runs.glob(f"s*/{name}/config.yaml")):
        return float(yaml.safe_load(cfg.read_text())["trainer"].get("limit_train_batches", 1.0))
    return 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ratio", type=float, help="SSAL/baseline step-time ratio (default: RUNS_DIR/step_cost.json)")
    args = p.parse_args()
    ratio = args.ratio
    if ratio is None:
        ratio = json.loads((args.runs / "step_cost.json").read_text())["ssal_step_cost"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name, label, color, key in RUNS:
        acc = curves(args.runs, name, key)
        if acc.size == 0:
            continue
        epochs = np.arange(1, acc.shape[1] + 1)
        mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
        cost = epochs * (ratio if name == "ssal" else epoch_fraction(args.runs, name))
        for ax, x in ((left, epochs), (right, cost)):
            if ax is left and name in ("baseline_eqtime", "baseline_5ep"):
                continue
            ax.plot(x, mean, "o-", color=color, label=f"{label} (n={len(acc)})", ms=3)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
    left.set_xlabel("epoch")
    right.set_xlabel(f"compute in baseline epochs (SSAL epoch = {ratio:.2f})")
    left.set_ylabel("validation top-1 (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
