"""How close are a linear probe's groups to a trained model's own? (``ssal.groupings: probe`` against two-stage.)

Takes a trained run, freezes its f, fits the ridge probe of ``ssal.probe`` on f's penultimate features of the run's
training split, and groups the classes by the probe's confusion on the run's validation split. Compares those groups
with the groups from the run's own confusion matrix (``RUN/confusion.npy``, from ``ssal confusion RUN``: the
two-stage pipeline's groups), with the data set's superclasses and with random groups: the share of within-group
class pairs that share a superclass, and the adjusted Rand index against the confusion groups. No training.

    python benchmarks/probe_groups.py RUN [--k 20] [--criterion join] [--out probe_groups.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ssal.build import load_data, make_loader
from ssal.grouping import Grouping, group_from_confusion, random_grouping
from ssal.probe import collect_features, probe_confusion
from ssal.runs import load_run


def same_superclass_share(g: Grouping, coarse: list[int]) -> float:
    """Percent of the within-group class pairs whose two classes share a superclass."""
    pairs = same = 0
    for members in g.groups():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pairs += 1
                same += coarse[a] == coarse[b]
    return 100.0 * same / max(pairs, 1)


def adjusted_rand(a: Grouping, b: Grouping) -> float:
    """Adjusted Rand index of two groupings of the same classes (1: identical, about 0: unrelated)."""
    table = np.zeros((a.k, b.k))
    np.add.at(table, (np.array(a.assignment), np.array(b.assignment)), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    n = float(table.sum())
    index, ra, rb = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = ra * rb / (n * (n - 1) / 2)
    return (index - expected) / ((ra + rb) / 2 - expected)


def run(argv: list[str] | None = None) -> str:
    """Compute the comparison; returns the markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a trained run directory (its best checkpoint is the frozen backbone)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--criterion", default="join", choices=("join", "split"))
    p.add_argument("--confusion", type=Path, default=None, help="default: RUN/confusion.npy")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    info = load_run(args.run)
    cfg, model = info.config, info.model.eval()
    C = info.num_classes
    data = load_data(cfg.data, ("train", "val"))
    train = make_loader(cfg, data, data.train, train=False)
    val = make_loader(cfg, data, data.val, train=False)
    sums, _, _, _ = collect_features(model, train, C)
    _, vx, vy, _ = collect_features(model, val, C, holdout_every=1)
    res = probe_confusion(sums, vx, vy, C)
    own = np.load(args.confusion or args.run / "confusion.npy", allow_pickle=False)
    f_top1 = 100.0 * float(np.trace(own)) / float(own.sum())
    groups = {
        "linear probe (frozen f)": group_from_confusion(res.confusion, args.k, args.criterion),
        "f's own confusion (two-stage)": group_from_confusion(own, args.k, args.criterion),
        "random": random_grouping(C, args.k, 0),
    }
    coarse = data.fine_to_coarse
    lines = [
        f"Run `{args.run.name}` ({cfg.model.name}, {C} classes), k = {args.k}, criterion {args.criterion}. "
        f"Validation top-1: f {f_top1:.2f} %, the probe {res.top1:.2f} % ({res.dim} features, "
        f"{res.fit_samples} training images, ridge alpha {res.alpha:g}).",
        "",
        "| groups from | within-group pairs in one superclass (%) | adjusted Rand index vs f's confusion groups |",
        "|---|---|---|",
    ]
    ref = groups["f's own confusion (two-stage)"]
    for name, g in groups.items():
        share = f"{same_superclass_share(g, coarse):.1f}" if coarse else "—"
        lines.append(f"| {name} | {share} | {adjusted_rand(g, ref):.3f} |")
    table = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(table)
    sys.stdout.write(table)
    return table


if __name__ == "__main__":
    run(sys.argv[1:])
