"""Where does SSAL pay? The data-limited regime on real CIFAR-100 (docs/results.md).

The fast net (configs/cifar100_regime.yaml) on N training images per class (data.per_class; one shared validation and
test split), trained for enough epochs that the baseline converges; every arm gets the same epochs. Arms:
  base             no branch
  base125          the baseline at 1.25x the epochs (is the baseline converged? equal epochs are then fair)
  superclasses     a conv64-gap branch at g2 predicting the 20 CIFAR-100 superclasses
  random           the same branch with random balanced groups (k = 20, grouping_seed = seed)
  output_groups    zero cost: the superclass loss on f's own output (no head)
  group_smoothing  zero cost: f's label smoothing goes to the true class's superclass mates
  two_stage        the paper's SSAL: groups (k = 20, join) from base's validation confusion, then the branch
  mixup            the baseline with mixup (alpha 0.8) / cutmix (alpha 1.0), switched per batch as in timm
  mixup_superclasses  the superclass branch with mixup / cutmix (the branch's targets mix too)
  randaugment      the baseline with torchvision's RandAugment per image
  randaugment_superclasses  the superclass branch with RandAugment
  erasing          the baseline with random erasing (probability 0.25 per image, as timm)
  paper_two_stage  the paper's branch set of the model (`ssal.branches: paper`, e.g. ResNet-18's two branches of
                   Table 1 with k = 20 and 50), groups from base's validation confusion, eta 1, aux weight 1

    python benchmarks/regime_study.py run OUT --sizes 25 50 100 --seeds 0 1 2 [--arms base superclasses ...]
    python benchmarks/regime_study.py run OUT_RN18 --model resnet18_cifar --epochs 30 --sizes 25 --seeds 0 \
        --arms base paper_two_stage
    python benchmarks/regime_study.py summarize OUT [--plot FIG.png] [--markdown TABLE.md]

Finished runs are skipped, unfinished ones resumed; each run is evaluated on the test split with its last checkpoint
(eval.json: +TR, +JP, +LC, +TS, group accuracy, ECE, NLL), and its clean training accuracy is written to
train_acc.json (the convergence check: train top-1 >= 95 %). Runs go seed by seed, so an interrupted study has
whole seeds. eta 0.5, aux weight 0.5 and k = 20 are fixed in advance (from the full-data studies), never chosen on test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from common import mean_std, read_eval, ssal

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cifar100_regime.yaml"
ARMS = (
    "base",
    "base125",
    "superclasses",
    "random",
    "output_groups",
    "group_smoothing",
    "two_stage",
    "paper_two_stage",
    "mixup",
    "mixup_superclasses",
    "randaugment",
    "randaugment_superclasses",
    "erasing",
)
VARIANTS = {"superclasses", "random", "output_groups", "group_smoothing", "mixup", "mixup_superclasses",
            "randaugment", "randaugment_superclasses", "erasing"}  # fmt: skip
#: Epochs per size (images per class): small sets need more passes to converge.
EPOCHS = {25: 60, 50: 40, 100: 30, 250: 20, 450: 15}


def epochs_for(size: int) -> int:
    return EPOCHS.get(size) or max(15, round(60 * (25 / size) ** 0.5))


def run_one(out: Path, size: int, seed: int, arm: str, common: list[str], epochs: int | None = None) -> Path:
    run = out / f"n{size}" / f"s{seed}" / arm
    if (run / "eval.json").is_file() and (run / "train_acc.json").is_file():
        return run
    given, epochs = epochs, epochs or epochs_for(size)
    if arm == "base125":
        epochs = math.ceil(1.25 * epochs)
    over = [f"run_dir={run}", f"seed={seed}", f"data.per_class={size}", f"trainer.epochs={epochs}",
            f"schedule.peak_epoch={epochs / 5:g}", f"trainer.val_every={max(1, epochs // 10)}", *common]  # fmt: skip
    args = ["--config", str(CONFIG)]
    if arm in VARIANTS:
        args += ["--variant", arm]
        over.append(f"ssal.grouping_seed={seed}")
    elif arm in ("two_stage", "paper_two_stage"):
        base = run_one(out, size, seed, "base", common, given)
        conf = base / "confusion.npy"
        if not conf.is_file():
            ssal("confusion", str(base), "--checkpoint", "last")
        over += ["ssal.groupings=confusion", f"ssal.confusion={conf}", "ssal.criterion=join"]
        if arm == "two_stage":
            over.append("ssal.branches=[{at: g2, k: 20, head: conv64-gap}]")
        else:
            over += ["ssal.branches=paper", "ssal.eta=1.0", "ssal.aux_weights=1.0"]
    if not (run / "metrics.csv").is_file() or len((run / "metrics.csv").read_text().splitlines()) <= epochs:
        resume = ["--resume"] if (run / "checkpoints" / "last.ckpt").is_file() else []
        ssal("train", *args, *over, *resume)
    if not (run / "eval.json").is_file():
        ssal("evaluate", str(run), "--checkpoint", "last")
    if not (run / "train_acc.json").is_file():
        write_train_acc(run)
    return run


def write_train_acc(run: Path) -> None:
    """Top-1 of f on the run's own (un-augmented) training images: the convergence check."""
    from ssal.build import make_loader
    from ssal.evaluation import collect_outputs
    from ssal.files import atomic_write_json
    from ssal.runs import load_run, load_run_data

    info = load_run(run, "last")
    data = load_run_data(info, ("train", "val"))
    out, y = collect_outputs(info.model.eval(), make_loader(info.config, data, data.train, train=False), "32")
    acc = 100.0 * float((out.main.argmax(1) == y).double().mean())
    atomic_write_json(run / "train_acc.json", {"train_top1": acc, "num_samples": int(y.numel())})
    print(f"{run}: train top-1 {acc:.2f} %", flush=True)


# --- summary ------------------------------------------------------------------------------------------------------
METRICS = (("tr_top1", "+TR"), ("jp_top1", "+JP"), ("lc_top1", "+LC"), ("group", "group acc"),
           ("ece_tr", "ECE f"), ("ece_tr_ts", "ECE f +TS"), ("ece_jp", "ECE +JP"), ("ece_jp_ts", "ECE +JP +TS"),
           ("nll_tr_ts", "NLL f +TS"), ("nll_jp_ts", "NLL +JP +TS"), ("train_top1", "train top-1"),
           ("pflop", "PFLOP"))  # fmt: skip


def read_run(run: Path) -> dict[str, float | None]:
    ev = read_eval(run) or {}
    tr = json.loads((run / "train_acc.json").read_text())
    group = next(iter(ev.get("group_acc", {}).values()), None)
    row = {k: ev.get(k) for k, _ in METRICS}
    row.update(group=group, train_top1=tr["train_top1"], pflop=(ev.get("train_flops") or 0) / 1e15)
    return row


def collect(out: Path) -> dict[tuple[int, str], dict[int, dict]]:
    runs: dict[tuple[int, str], dict[int, dict]] = {}
    for ev in sorted(out.glob("n*/s*/*/eval.json")):
        run = ev.parent
        if not (run / "train_acc.json").is_file():
            continue
        size, seed = int(run.parent.parent.name[1:]), int(run.parent.name[1:])
        runs.setdefault((size, run.name), {})[seed] = read_run(run)
    return runs


def summarize(out: Path, plot: Path | None, markdown: Path | None) -> str:
    runs = collect(out)
    head = "| images / class | arm | seeds | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for size, arm in sorted(runs, key=lambda k: (k[0], ARMS.index(k[1]) if k[1] in ARMS else 99)):
        by_seed = runs[(size, arm)]
        cells = []
        for key, _ in METRICS:
            vals = [r[key] for r in by_seed.values() if r.get(key) is not None]
            cells.append(mean_std(vals, "{:.4f}" if key in ("pflop", "nll_tr_ts", "nll_jp_ts") else "{:.2f}"))
        lines.append(f"| {size} | {arm} | {len(by_seed)} | " + " | ".join(cells) + " |")
    lines += ["", "Paired by seed, SSAL arm minus the baseline's +TR (test top-1, points):", "", "```"]
    gains: dict[str, list[tuple[int, float, float]]] = {}
    for (size, arm), by_seed in sorted(runs.items()):
        base = runs.get((size, "base"), {})
        if arm == "base":
            continue
        for pred in ("tr_top1", "jp_top1"):
            d = [r[pred] - base[s]["tr_top1"] for s, r in by_seed.items() if s in base and r.get(pred) is not None]
            if d:
                lines.append(f"n{size} {arm} {pred[:2]} - base = {mean_std(d)} ({len(d)} seeds)")
                if pred == "tr_top1" or arm in ("superclasses", "random", "two_stage"):
                    m, sd = statistics.mean(d), statistics.stdev(d) if len(d) > 1 else 0.0
                    gains.setdefault(f"{arm} {pred[:2]}", []).append((size, m, sd))
    lines.append("```")
    text = "\n".join(lines) + "\n"
    if markdown:
        markdown.write_text(text, encoding="utf-8")
    if plot and gains:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = sorted(gains)
        for i, name in enumerate(names):
            xs, ms, sds = zip(*sorted(gains[name]), strict=True)
            shift = 1 + 0.04 * (i - len(names) / 2) / len(names)  # side by side at each size
            ax.errorbar([x * shift for x in xs], ms, yerr=sds, marker="o", capsize=3, label=name)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        sizes = sorted({x for pts in gains.values() for x, _, _ in pts})
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training images per class")
        ax.set_ylabel("test top-1 minus the baseline's (points)")
        ax.set_title("SSAL's gain against the converged baseline (mean ± std over seeds)")
        ax.legend(fontsize=7)
        fig.savefig(plot, dpi=110, bbox_inches="tight")
    return text


def plot_curves(out: Path, path: Path) -> None:
    """Validation top-1 of f against the epoch for every baseline (base, base125): the convergence check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssal.runs import read_metrics

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in sorted(out.glob("n*/s*/base*")):
        rows = [r for r in read_metrics(run / "metrics.csv") if r.get("f_top1")]
        if rows:
            style = "--" if run.name == "base125" else "-"
            label = f"{run.parent.parent.name[1:]}/class, seed {run.parent.name[1:]}, {run.name}"
            ax.plot([int(r["epoch"]) for r in rows], [float(r["f_top1"]) for r in rows], style, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 of f (%)")
    ax.set_title("Baselines of the regime study: validation accuracy per epoch")
    ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--arms", nargs="+", default=["base", "superclasses", "random", "output_groups"], choices=ARMS)
    r.add_argument("--widths", default="", help="fastnet widths, e.g. 16,32,128,128 (default: the config's)")
    r.add_argument("--model", default="", help="another backbone, e.g. resnet18_cifar (default: the config's)")
    r.add_argument("--epochs", type=int, default=None, help="epochs of every size (default: EPOCHS per size)")
    r.add_argument("--threads", type=int, default=0)
    s = sub.add_parser("summarize")
    s.add_argument("out", type=Path)
    s.add_argument("--plot", type=Path)
    s.add_argument("--markdown", type=Path)
    s.add_argument("--curves", type=Path, help="PNG of the baselines' validation accuracy per epoch")
    a = ap.parse_args()
    if a.cmd == "summarize":
        sys.stdout.write(summarize(a.out, a.plot, a.markdown))
        if a.curves:
            plot_curves(a.out, a.curves)
        return
    common = [f"trainer.threads={a.threads}"] if a.threads else []
    if a.model:
        common += [f"model.name={a.model}", "model.options={}"]
    if a.widths:
        common.append(f"model.options.widths=[{a.widths}]")
    for seed in a.seeds:
        for size in a.sizes:
            for arm in a.arms:
                run_one(a.out, size, seed, arm, common, a.epochs)


if __name__ == "__main__":
    main()
