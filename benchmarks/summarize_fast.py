"""Table of the accuracy-per-FLOP recipe runs of benchmarks/cifar100_fast.sh (docs/results.md).

python benchmarks/summarize_fast.py OUT_DIR

One block per arm folder of OUT_DIR (base first, then ssal, then the other variants).

Accuracies are test top-1 of f (+TR); for runs with SSAL branches also of the joint prediction (+JP), as "+TR / +JP".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import mean_std, read_eval

EVALS = ("eval", "eval_flip", "eval_raw_flip")  # EMA weights, + flip TTA, raw weights + flip TTA


def _get(run: Path, name: str) -> tuple[float | None, float | None]:
    e = read_eval(run, name)
    return (None, None) if e is None else (e["tr_top1"], e.get("jp_top1"))


def _cell(values: list[float | None], fmt: str = "{:.2f}") -> str:
    vals = [v for v in values if v is not None]
    return "—" if len(values) > 1 and len(vals) < 2 else mean_std(vals, fmt)


def _pair(tr: list[float | None], jp: list[float | None]) -> str:
    return _cell(tr) if all(v is None for v in jp) else f"{_cell(tr)} / {_cell(jp)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    lines = [
        "| arm | seed | PFLOP | test top-1 (EMA) | + flip TTA | raw weights + flip TTA |",
        "|---|---|---|---|---|---|",
    ]
    arms = sorted((d.name for d in a.out.iterdir() if d.is_dir()), key=lambda n: (n != "base", n != "ssal", n))
    for arm in arms:
        rows = []
        for run in sorted((a.out / arm).glob("s*")):
            ev = read_eval(run)
            if ev is None:
                continue
            flops = ev["train_flops"] / 1e15
            rows.append((flops, [_get(run, name) for name in EVALS]))
            cells = " | ".join(_pair([tr], [jp]) for tr, jp in rows[-1][1])
            lines.append(f"| {arm} | {run.name[1:]} | {flops:.3f} | {cells} |")
        if len(rows) > 1:
            cols = [_pair([r[1][i][0] for r in rows], [r[1][i][1] for r in rows]) for i in range(len(EVALS))]
            flops = _cell([r[0] for r in rows], "{:.3f}")
            lines.append(
                f"| **{arm}, mean ± std** | {len(rows)} | **{flops}** | " + " | ".join(f"**{c}**" for c in cols) + " |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
