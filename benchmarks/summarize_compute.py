"""Tables and plot of accuracy against total training compute from benchmarks/compute_curves.py runs.

    python benchmarks/summarize_compute.py OUT [--plot docs/figures/cifar100_accuracy_vs_compute.png]

Total compute of an arm is what producing its model costs: its own training FLOPs (metrics.csv ``train_flops``,
the online confusion pass included), plus, for the two-stage arm, the baseline run and its confusion pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from common import mean_std

from ssal.runs import read_metrics

LABELS = {
    "base": "baseline",
    "base_eq": "baseline, SSAL's compute",
    "online": "one-pass SSAL",
    "two_stage": "two-stage SSAL (paper)",
    "random": "one-pass, random groups",
    "superclass": "one-pass, superclasses",
    "weights": "one-pass, class-weight groups",
    "shipped": "shipped groups (cifar100-join-20)",
    "regroup": "one-pass, regrouped every B/4 epochs",
    "online_aux1": "one-pass, aux weight 1.0",
    "online_k50": "one-pass, k = 50",
    "online_g3": "one-pass, branch at g3",
    "online_g1": "one-pass, branch at g1",
}


def label(arm: str) -> str:
    """The table's name of an arm (``online_e<E0>``: one-pass SSAL with another group_epoch)."""
    if arm.startswith("online_e") and arm not in LABELS:
        return f"one-pass, group_epoch {arm.removeprefix('online_e')}"
    return LABELS.get(arm, arm)


def _rows(run: Path) -> list[dict[str, str]]:
    return read_metrics(run / "metrics.csv")


def _confusion_pass_flops(base: Path) -> float:
    """Forward FLOPs of the baseline's confusion pass over its validation split."""
    from ssal.compute import forward_flops_per_sample
    from ssal.runs import load_run

    info = load_run(base)
    return forward_flops_per_sample(info.model) * float(_rows(base)[-1]["val_samples"])


def collect(out: Path) -> list[dict]:
    """One record per evaluated run: budget, seed, arm, accuracies, total compute."""
    recs = []
    for ev in sorted(out.glob("b*/s*/*/eval.json")):
        run = ev.parent
        arm, seed, budget = run.name, int(run.parent.name[1:]), int(run.parent.parent.name[1:])
        e = json.loads(ev.read_text())
        own = float(_rows(run)[-1]["train_flops"])
        total = own
        if arm == "two_stage":
            base = run.parent / "base"
            total += float(_rows(base)[-1]["train_flops"]) + _confusion_pass_flops(base)
        recs.append(
            {
                "budget": budget, "seed": seed, "arm": arm, "tr": e["tr_top1"], "jp": e.get("jp_top1"),
                "group": next(iter(e.get("group_acc", {}).values()), None), "ece_tr": e.get("ece_tr"),
                "ece_jp": e.get("ece_jp"), "within_tr": e.get("mistakes_within", {}).get("tr"),
                "within_jp": e.get("mistakes_within", {}).get("jp"), "pflop": total / 1e15,
            }
        )  # fmt: skip
    return recs


def table(recs: list[dict]) -> str:
    """Markdown: one row per (budget, arm), mean ± std over seeds."""
    lines = [
        "| budget (baseline epochs) | arm | seeds | total PFLOP | +TR top-1 | +JP top-1 | group acc | ECE +TR | "
        "ECE +JP | errors in superclass +TR | +JP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {a: i for i, a in enumerate(LABELS)}
    keys = sorted({(r["budget"], r["arm"]) for r in recs}, key=lambda k: (k[0], order.get(k[1], 99), k[1]))
    for b, arm in keys:
        rs = [r for r in recs if r["budget"] == b and r["arm"] == arm]
        lines.append(
            f"| {b} | {label(arm)} | {len(rs)} | {statistics.mean(r['pflop'] for r in rs):.4f} | "
            + " | ".join(mean_std([r[k] for r in rs]) for k in ("tr", "jp", "group", "ece_tr", "ece_jp", "within_tr"))
            + f" | {mean_std([r['within_jp'] for r in rs])} |"
        )
    return "\n".join(lines)


def paired(recs: list[dict], arm: str, ref: str, key: str = "jp") -> str:
    """Paired differences (arm - ref) per budget over the seeds both have."""
    lines = []
    for b in sorted({r["budget"] for r in recs}):
        a = {r["seed"]: r for r in recs if r["budget"] == b and r["arm"] == arm}
        c = {r["seed"]: r for r in recs if r["budget"] == b and r["arm"] == ref}
        seeds = sorted(set(a) & set(c))
        if not seeds:
            continue
        d = [a[s][key] - c[s]["tr"] for s in seeds if a[s][key] is not None]
        if d:
            lines.append(f"budget {b}: {label(arm)} {key} - {label(ref)} = {mean_std(d)} ({len(d)} seeds)")
    return "\n".join(lines)


def plot(recs: list[dict], path: Path) -> None:
    """Test top-1 against total training compute: baseline curve and each SSAL arm (+JP)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = {"online": "s-", "two_stage": "^-", "random": "x--", "superclass": "d--", "weights": "v:", "shipped": "*:"}
    base_pts = sorted(
        (statistics.mean(r["pflop"] for r in rs), statistics.mean(r["tr"] for r in rs))
        for rs in _groups(recs, ("base", "base_eq"))
    )
    if base_pts:
        ax.plot(*zip(*base_pts, strict=True), "o-", color="k", label="baseline (+TR)")
    for arm in styles:
        pts = sorted(
            (statistics.mean(r["pflop"] for r in rs), statistics.mean(r["jp"] for r in rs))
            for rs in _groups(recs, (arm,))
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), styles[arm], label=f"{LABELS[arm]} (+JP)")
    ax.set_xscale("log")
    ax.set_xlabel("total training compute (PFLOP, forward + backward, every stage)")
    ax.set_ylabel("CIFAR-100 test top-1 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _groups(recs: list[dict], arms: tuple[str, ...]) -> list[list[dict]]:
    keys = sorted({(r["budget"], r["arm"]) for r in recs if r["arm"] in arms})
    return [[r for r in recs if (r["budget"], r["arm"]) == k] for k in keys]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--keys", nargs="+", default=["jp"], choices=["jp", "tr"], help="the SSAL predictions to pair")
    a = p.parse_args()
    torch.set_num_threads(1)
    recs = collect(a.out)
    print(table(recs))
    print()
    order = {a: i for i, a in enumerate(LABELS)}
    for arm in sorted({r["arm"] for r in recs} - {"base", "base_eq"}, key=lambda a: (order.get(a, 99), a)):
        for ref in ("base", "base_eq"):
            for key in a.keys:
                s = paired(recs, arm, ref, key)
                if s:
                    print(s)
    if a.plot:
        plot(recs, a.plot)
        print(f"\nplot: {a.plot}")


if __name__ == "__main__":
    main()
