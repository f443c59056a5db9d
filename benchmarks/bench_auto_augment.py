"""RandAugment / TrivialAugmentWide on the array path: one torchvision call per image against the batched draws of
``ssal.data.mixing.BatchAutoAugment`` (one call per drawn operation and magnitude), on a batch of uint8 images.

Run: python benchmarks/bench_auto_augment.py [--batch 512] [--side 32] [--repeats 5] [--threads 1]

The two are timed in turn (A B A B ...) and the table gives the median seconds per batch of each, their ratio, and
the CPU cores other processes used meanwhile (a ratio measured next to other jobs is not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssal.bench import machine_info
from ssal.cpuload import cpu_snapshot, load_between
from ssal.data.mixing import BatchAutoAugment, auto_augment_transform


def per_image(policy, x: torch.Tensor) -> torch.Tensor:
    """torchvision's policy called once per image (the reference)."""
    return torch.stack([policy(img) for img in x.unbind(0)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x = (torch.rand(a.batch, 3, a.side, a.side, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    info = machine_info()
    print(f"{info.get('cpu', '?')}, {a.threads} thread(s), batch {a.batch} x 3 x {a.side} x {a.side} uint8\n")
    print("| policy | per image (s / batch) | batched (s / batch) | speed-up | other processes (cores) |")
    print("|---|---|---|---|---|")
    for name in ("randaugment", "trivialaugment"):
        policy = auto_augment_transform(name)
        batched = BatchAutoAugment(policy)
        times: dict[str, list[float]] = {"per_image": [], "batched": []}
        before = cpu_snapshot()
        for _ in range(a.repeats):
            for key in times:
                t = time.perf_counter()
                per_image(policy, x) if key == "per_image" else batched(x.clone())
                times[key].append(time.perf_counter() - t)
        load = load_between(before, cpu_snapshot())
        one, many = statistics.median(times["per_image"]), statistics.median(times["batched"])
        print(f"| {name} | {one:.4f} | {many:.4f} | {one / many:.1f}x | {load.other_cores:.2f} |")


if __name__ == "__main__":
    main()
