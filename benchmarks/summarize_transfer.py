"""Table of several seeds of benchmarks/transfer_cifar100.py (docs/backbones.md).

python benchmarks/summarize_transfer.py OUT_DIR [OUT_DIR ...]

One row per seed and run (test top-1 of f (+TR), +JP and +LC, ECE, compute), then the mean ± std over the seeds of
each run and the per-seed differences of the fine-tuning runs with SSAL from fine-tuning without it (paired by seed:
a seed fixes the class split, the pre-training and the fine-tuning data, so the pairs share everything but SSAL).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import mean_std, read_eval

RUNS = {  # label: run folder inside OUT_DIR
    "from scratch (no pre-training, no SSAL)": "scratch",
    "fine-tuned, no SSAL": "finetune/baseline",
    "fine-tuned, SSAL two-stage": "finetune/ssal",
    "fine-tuned, SSAL one pass (probe groups)": "finetune_probe",
}
BASE = "fine-tuned, no SSAL"
KEYS = ("tr_top1", "jp_top1", "lc_top1", "ece_tr", "ece_jp")


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def summarize(outs: list[Path]) -> str:
    """The Markdown tables of the seeds in ``outs``."""
    evals = {out: {label: read_eval(out / run) for label, run in RUNS.items()} for out in outs}
    head = "| seed | run | +TR top-1 | +JP top-1 | +LC top-1 | ECE +TR | ECE +JP | PFLOP to the checkpoint |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for out in outs:
        for label, ev in evals[out].items():
            if ev is None:
                continue
            pf = f"{ev['train_flops'] / 1e15:.3f}" if ev.get("train_flops") else "—"
            cells = " | ".join(_f(ev.get(k)) for k in KEYS)
            lines.append(f"| {_seed(out)} | {label} | {cells} | {pf} |")
    lines += ["", f"Mean ± std over {len(outs)} seed(s):", "", "| run | seeds | +TR top-1 | +JP top-1 | +LC top-1 |"]
    lines.append("|---|---|---|---|---|")
    for label in RUNS:
        got = [evals[o][label] for o in outs if evals[o][label] is not None]
        cols = [mean_std([e[k] for e in got if e.get(k) is not None]) for k in KEYS[:3]]
        lines.append(f"| {label} | {len(got)} | {' | '.join(cols)} |")
    lines += ["", f"Paired by seed, minus '{BASE}' (+TR of the baseline):", "", "| run | +TR | +JP | +LC |"]
    lines.append("|---|---|---|---|")
    for label in [k for k in RUNS if k.startswith("fine-tuned, SSAL")]:
        diffs: dict[str, list[float]] = {k: [] for k in KEYS[:3]}
        for o in outs:
            e, b = evals[o][label], evals[o][BASE]
            if e is None or b is None:
                continue
            for k in diffs:
                if e.get(k) is not None:
                    diffs[k].append(e[k] - b["tr_top1"])
        lines.append(f"| {label} | {' | '.join(mean_std(diffs[k]) for k in diffs)} |")
    return "\n".join(lines) + "\n"


def _seed(out: Path) -> str:
    import yaml

    return str(yaml.safe_load((out / "pretrain.yaml").read_text()).get("seed", "?"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outs", type=Path, nargs="+", help="OUT folders of transfer_cifar100.py, one per seed")
    print(summarize(p.parse_args().outs), end="")


if __name__ == "__main__":
    main()
