"""Paper Fig. 2 at small scale: accuracy against the number of groups k, join vs split (benchmarks/cifar100_fig2.sh).

Run: python benchmarks/summarize_fig2.py RUNS_DIR [--baseline RUN_DIR] [--out fig2.png]
RUNS_DIR holds join_k2/ ... split_k20/, each with the eval.json of `ssal evaluate`. Prints a Markdown table and
draws the paper's two panels: left the SSAL model's joint prediction (+JP) and main classifier (+TR), right the
auxiliary classifier alone (group accuracy; chance is 1/k).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CRITERIA = ("join", "split")
KS = (2, 4, 10, 20)


def load(runs: Path) -> dict[tuple[str, int], dict]:
    """eval.json of every (criterion, k) run present."""
    out = {}
    for c in CRITERIA:
        for k in KS:
            path = runs / f"{c}_k{k}" / "eval.json"
            if path.is_file():
                out[(c, k)] = json.loads(path.read_text())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", type=Path)
    p.add_argument("--baseline", type=Path, help="a baseline run dir (its test +TR is drawn as a line)")
    p.add_argument("--out", type=Path, help="PNG of the two panels")
    args = p.parse_args()
    evals = load(args.runs)
    base = json.loads((args.baseline / "eval.json").read_text())["tr_top1"] if args.baseline else None
    print("| criterion | k | +TR top-1 | +JP top-1 | +LC top-1 | group acc. (chance) |")
    print("|---|---|---|---|---|---|")
    for (c, k), e in sorted(evals.items()):
        g = e["group_acc"]["g1"]
        print(f"| {c} | {k} | {e['tr_top1']:.2f} | {e['jp_top1']:.2f} | {e['lc_top1']:.2f} | {g:.2f} ({100 / k:.0f}) |")
    if base is not None:
        print(f"\nbaseline +TR top-1: {base:.2f}")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        for c, color in zip(CRITERIA, ("tab:red", "tab:blue"), strict=True):
            ks = [k for k in KS if (c, k) in evals]
            left.plot(ks, [evals[(c, k)]["jp_top1"] for k in ks], "o-", color=color, label=f"{c} +JP")
            left.plot(ks, [evals[(c, k)]["tr_top1"] for k in ks], "s--", color=color, alpha=0.6, label=f"{c} +TR")
            right.plot(ks, [evals[(c, k)]["group_acc"]["g1"] for k in ks], "o-", color=color, label=c)
        if base is not None:
            left.axhline(base, color="gray", ls=":", label="baseline")
        right.plot(KS, [100 / k for k in KS], ":", color="gray", label="chance")
        for ax, title in ((left, "SSAL model (test top-1 %)"), (right, "auxiliary classifier (group acc. %)")):
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(KS, [str(k) for k in KS])
            ax.set_xlabel("number of groups k")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
