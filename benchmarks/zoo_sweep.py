"""Does every torchvision classification model (and each timm family) take an SSAL branch correctly?

For each model (built without pretrained weights, at its native input size unless --input-size is given): list its
attach points (``ssal models NAME``), put one branch (k = 3 of 10 classes, default head) at the middle paper-style
position g_i (or, where the model has none, at the module whose output is closest to 1/8 of the input side), then
run one training step on a batch of 2 random images and check:

- the branch's feature layout is the one ``ssal models`` reports (never guessed: an unknown layout is a failure);
- the head's first layer takes the feature's *channel* axis (nchw: dim 1, nhwc and tokens: the last dim): a head
  that convolves over a spatial axis (the silent Swin failure) fails here;
- every output is finite and has its shape ((2, 10) for f, (2, 3) for the branch), and the loss reaches both the
  branch and the backbone below the attach point (their gradients are non-zero).

    python benchmarks/zoo_sweep.py [--timm] [--pattern 'torchvision:*'] [--out docs/zoo_sweep.md]

Writes a markdown table (one row per model; with --out, rows already there are kept, so a stopped sweep resumes;
failed models are checked again) and exits 1 if any model fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path

import torch
from torch import nn

import ssal
from ssal.files import atomic_write_text
from ssal.models import create_model
from ssal.models.describe import AttachPoint, attach_points, model_names

#: One or two models per timm family the docs promise (resnet, convnext, efficientnet, vit/deit, swin), small ones.
TIMM_FAMILIES = [
    "timm:resnet18",
    "timm:resnet50",
    "timm:convnext_atto",
    "timm:efficientnet_b0",
    "timm:mobilenetv3_small_100",
    "timm:vit_tiny_patch16_224",
    "timm:deit_tiny_patch16_224",
    "timm:deit_tiny_distilled_patch16_224",
    "timm:swin_tiny_patch4_window7_224",
    "timm:regnety_002",
]


def choose(points: list[AttachPoint]) -> AttachPoint:
    """The middle alias g_i, else the known-layout module closest to 1/8 of the input side."""
    aliased = [p for p in points if p.alias]
    if aliased:
        aliased.sort(key=lambda p: int(p.alias[1:]))
        return aliased[(len(aliased) - 1) // 2]
    usable = [p for p in points if p.layout not in ("?", "vector") and p.reduction]
    if not usable:
        raise RuntimeError("no attach point with a known layout")
    return min(usable, key=lambda p: (abs(math.log2(p.reduction / 8)), -points.index(p)))


def channel_width(p: AttachPoint) -> int:
    """The feature width the head must take, read from the shape by the reported layout."""
    return p.shape[0] if p.layout == "nchw" else p.shape[-1]


def first_in_width(head: nn.Module) -> int:
    """The input width of a head's first convolution / linear / norm layer."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.LayerNorm):
            return m.normalized_shape[0]
    raise RuntimeError("head has no conv / linear / norm layer")


def check(name: str, input_size: int | None) -> dict:
    """Build ``name`` with one branch, run one training step, return a row (raises on a failed check)."""
    t0 = time.perf_counter()
    points, size = attach_points(name, num_classes=10, input_size=input_size, depth=3)
    p = choose(points)
    torch.manual_seed(0)
    model = create_model(name, 10, ssal=[{"at": p.name, "k": 3}], input_size=size)
    branch = model.branches[0]
    if branch.layout != p.layout:
        raise AssertionError(f"branch layout {branch.layout} != reported {p.layout}")
    want, got = channel_width(p), first_in_width(branch.head)
    if got != want:
        raise AssertionError(f"head takes width {got}, the feature's channel axis is {want} ({p.layout} {p.shape})")
    model.train()
    x, y = torch.rand(2, *size), torch.tensor([0, 7])
    out = model(x)
    if tuple(out.main.shape) != (2, 10) or tuple(out.aux[0].shape) != (2, 3):
        raise AssertionError(f"output shapes {tuple(out.main.shape)}, {tuple(out.aux[0].shape)}")
    loss = ssal.SSALLoss(model.gammas, aux_weights=[0.5])(out, y).total
    if not torch.isfinite(loss):
        raise AssertionError(f"loss {float(loss)}")
    loss.backward()
    head_grad = sum(float(q.grad.abs().sum()) for q in branch.head.parameters() if q.grad is not None)
    stem = next(q for q in model.backbone.parameters() if q.requires_grad)
    if head_grad == 0 or stem.grad is None or float(stem.grad.abs().sum()) == 0:
        raise AssertionError("no gradient in the branch or in the backbone's first layer")
    params = sum(q.numel() for q in model.parameters()) / 1e6
    return {"at": f"{p.alias or ''} `{p.name}`".strip(), "shape": p.shape, "layout": f"{p.layout} ({p.source})",
            "size": size[1], "params": params, "s": time.perf_counter() - t0}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pattern", default="torchvision:*", help="shell pattern over the model names")
    ap.add_argument("--timm", action="store_true", help="also the timm families listed in TIMM_FAMILIES")
    ap.add_argument("--input-size", type=int, default=None, help="input side for every model (default: native)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args()
    names = [n for ns in model_names().values() for n in ns if fnmatch.fnmatch(n, a.pattern)]
    names += TIMM_FAMILIES if a.timm else []
    done = {}
    if a.out and a.out.is_file():  # resume: keep the rows of models already checked
        for line in a.out.read_text().splitlines():
            if line.startswith("| `"):
                done[line.split("`")[1]] = line
    kept = [line for name, line in done.items() if name not in names]  # rows of other runs stay in the table
    rows, failed = [], []
    for name in names:
        if name in done and "FAILED" not in done[name]:  # a failed model is checked again
            rows.append(done[name])
            continue
        try:
            r = check(name, a.input_size)
            rows.append(f"| `{name}` | {r['at']} | {tuple(r['shape'])} | {r['layout']} | {r['size']} | "
                        f"{r['params']:.1f} | ok |")  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a sweep reports every failure and goes on
            failed.append(name)
            msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            rows.append(f"| `{name}` | | | | | | **FAILED**: {msg} |")
            traceback.print_exc()
        print(rows[-1], flush=True)
        if a.out:
            atomic_write_text(a.out, "\n".join(rows + kept) + "\n")  # progress, replaced by the full table at the end
    rows += kept
    failed += [line.split("`")[1] for line in kept if "FAILED" in line]
    head = [
        f"Models checked: {len(rows)}, failed: {len(failed)}. {date.today().isoformat()}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, fp32, command: "
        f"`python benchmarks/zoo_sweep.py {' '.join(sys.argv[1:])}`",
        "",
        "| model | branch at | feature (no batch) | layout (from) | input | params (M) | result |",
        "|---|---|---|---|---|---|---|",
    ]
    text = "\n".join(head + rows) + "\n"
    if a.out:
        atomic_write_text(a.out, text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
