"""Table of the accuracy-per-FLOP recipe runs of benchmarks/cifar100_fast.sh (docs/results.md).

python benchmarks/summarize_fast.py OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _get(run: Path, name: str) -> float | None:
    f = run / f"{name}.json"
    return json.loads(f.read_text())["tr_top1"] if f.is_file() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    lines = [
        "| arm | seed | PFLOP | test top-1 (EMA) | + flip TTA | raw weights + flip TTA |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("base", "ssal"):
        rows = []
        for run in sorted((a.out / arm).glob("s*")):
            if not (run / "eval.json").is_file():
                continue
            e = json.loads((run / "eval.json").read_text())
            vals = [e["train_flops"] / 1e15, e["tr_top1"], _get(run, "eval_flip"), _get(run, "eval_raw_flip")]
            rows.append(vals)
            cells = " | ".join("—" if v is None else f"{v:.3f}" if i == 0 else f"{v:.2f}" for i, v in enumerate(vals))
            lines.append(f"| {arm} | {run.name[1:]} | {cells} |")
        if len(rows) > 1:
            stats = []
            for i in range(4):
                col = [r[i] for r in rows if r[i] is not None]
                if len(col) < 2:
                    stats.append("—")
                else:
                    f = "{:.3f}" if i == 0 else "{:.2f}"
                    stats.append(f"{f.format(statistics.mean(col))} ± {f.format(statistics.stdev(col))}")
            lines.append(f"| **{arm}, mean ± std** | {len(rows)} | " + " | ".join(f"**{s}**" for s in stats) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
