"""Where a training step's time goes, and whether torch.compile helps, for one training config.

    python benchmarks/profile_step.py configs/cifar100_fast.yaml [--steps 8] [--no-compile]

The config's model (widths, branches, batch size, precision, memory layout) trains on synthetic images: an eager
copy and a ``torch.compile`` copy of the same initial weights take steps in turn (A B A B, after warm-up), so their
ratio holds on a busy machine. Then ``torch.profiler`` splits the eager step by operator kind. Printed: img/s of both,
the matmul peak of the precision used (``ssal.bench.matmul_peak``), the fraction of it the whole step reaches and the
fraction the convolutions and matmuls reach on their own, and each operator kind's share of the step time.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ssal import bench
from ssal.cli.bench import from_config
from ssal.hardware import resolve_precision
from ssal.loss import SSALLoss
from ssal.models import create_model

KINDS = {  # operator kind -> substrings of aten op names; first match wins
    "convolution / matmul": ("convolution", "mm", "linear", "matmul"),
    "batch norm": ("batch_norm",),
    "pooling": ("pool",),
    "activation": ("gelu", "relu", "silu", "sigmoid", "tanh"),
    "fill / copy": ("fill_", "copy_", "zero_", "_to_copy"),
}


def kind(op: str) -> str:
    return next((k for k, subs in KINDS.items() if any(s in op for s in subs)), "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--steps", type=int, default=8, help="timed steps of each model")
    ap.add_argument("--no-compile", action="store_true", help="profile only, no compiled copy")
    a = ap.parse_args()
    s, branches = from_config(a.config, bench.BenchSettings(), None, None)
    precision = resolve_precision(s.precision, "cpu")
    dtype = {"32-true": torch.float32, "16-mixed": torch.float16}.get(precision, torch.bfloat16)
    torch.manual_seed(0)
    eager = create_model(s.model, s.num_classes, ssal=branches, input_size=s.image_size(), **s.model_options)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    eager = eager.to(memory_format=fmt).train()
    x = torch.rand(s.batch_size, *s.image_size()).contiguous(memory_format=fmt)
    y = torch.randint(0, s.num_classes, (s.batch_size,))
    crit = SSALLoss(eager.gammas)

    steps = {"eager": bench.train_step_fn(eager, crit, x, y, precision)}
    if not a.no_compile:
        twin = copy.deepcopy(eager)
        steps["compiled"] = bench.train_step_fn(twin, crit, x, y, precision, torch.compile(twin.forward))
    for step in steps.values():  # warm-up; compiles
        for _ in range(3):
            step()
    times = defaultdict(list)
    for _ in range(a.steps):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    flops = bench.train_step_flops(s, branches)
    peak = bench.matmul_peak(dtype)[0]
    eager_s = float(np.median(times["eager"]))
    print(f"{a.config}: {s.model} {s.model_options}, batch {s.batch_size}, {precision}, "
          f"{'channels_last' if s.channels_last else 'contiguous'}, {flops / s.batch_size / 1e9:.3f} GFLOP per "
          f"training image; {str(dtype).replace('torch.', '')} matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    print(f"eager     {s.batch_size / eager_s:8.0f} img/s  {flops / eager_s / 1e9:7.0f} GFLOP/s  "
          f"fraction of peak {flops / eager_s / 1e9 / peak:.3f}")  # fmt: skip
    if "compiled" in times:
        comp = np.array(times["compiled"])
        print(f"compiled  {s.batch_size / float(np.median(comp)):8.0f} img/s  "
              f"compiled / eager speed {float(np.median(np.array(times['eager']) / comp)):.3f} "
              f"(median of {a.steps} interleaved pairs)")  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            steps["eager"]()
    share: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            share[kind(ev.key)] += ev.self_cpu_time_total
    total = sum(share.values())
    mm_s = share["convolution / matmul"] / 1e6 / 4
    print(f"convolutions and matmuls alone: {flops / mm_s / 1e9:.0f} GFLOP/s, fraction of peak "
          f"{flops / mm_s / 1e9 / peak:.3f}")  # fmt: skip
    print("share of the eager step's operator time:")
    for k, v in sorted(share.items(), key=lambda kv: -kv[1]):
        print(f"  {k:22s} {v / total:6.1%}")


if __name__ == "__main__":
    main()
