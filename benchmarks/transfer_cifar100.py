"""Does a pretrained backbone transfer, and does SSAL help when fine-tuning it? CIFAR-100 split in two halves.

1. Pre-train a backbone on 50 CIFAR-100 classes (in-memory arrays: the NumPy folder format with the other 50
   classes' images left out) -> OUT/pretrain.
2. Write the other 50 classes as an ImageFolder of PNGs (train/ and val/ = CIFAR's test images) -> OUT/data/finetune.
3. Fine-tune from the pre-trained checkpoint (``model.pretrained: PATH``) with ``ssal pipeline``: the pipeline's
   baseline is fine-tuning without SSAL, its SSAL run fine-tuning with SSAL (groups from the fine-tuned baseline's
   confusion matrix) -> OUT/finetune.
4. Fine-tune with SSAL whose groups come from a linear probe on the pre-trained backbone's frozen features, made
   before the first step (``ssal.groupings: probe``: no baseline run needed) -> OUT/finetune_probe.
5. Train the same model from scratch on the 50 new classes (no SSAL) -> OUT/scratch.
6. Write OUT/transfer.md: test top-1/top-5 of f (+TR), +JP and +LC for each, and training seconds.

Run (CPU hours at the defaults; --per-class and the epoch options make it small):

    python benchmarks/transfer_cifar100.py --cifar "$SSAL_CIFAR100_DIR" --out runs/transfer \
        [--model resnet18_cifar] [--pretrain-epochs 15] [--finetune-epochs 8] [--per-class 500]

Every step is an ``ssal`` command on a config written to OUT/*.yaml; re-running skips finished steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ssal.cli import main as ssal_main


def _split_classes(seed: int) -> tuple[list[int], list[int]]:
    perm = np.random.default_rng(seed).permutation(100)
    return sorted(perm[:50].tolist()), sorted(perm[50:].tolist())


def _subset(z: Any, classes: list[int], per_class: int | None, seed: int) -> dict[str, np.ndarray]:
    labels = z["fine_labels"]
    rng = np.random.default_rng(seed)
    idx = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if per_class is not None and len(members) > per_class:
            members = np.sort(rng.choice(members, per_class, replace=False))
        idx.append(members)
    keep = np.sort(np.concatenate(idx))
    return {k: z[k][keep] for k in ("images", "fine_labels", "coarse_labels")}


def write_data(cifar: Path, out: Path, per_class: int | None, test_per_class: int | None, seed: int) -> list[str]:
    """The pre-training arrays (classes A) and the fine-tuning ImageFolder of PNGs (classes B); returns B's names."""
    from PIL import Image

    meta = json.loads((cifar / "meta.json").read_text())
    names = meta["fine_label_names"]
    a, b = _split_classes(seed)
    pre, ft = out / "data" / "pretrain", out / "data" / "finetune"
    done = ft / "done.json"
    if done.is_file():
        return json.loads(done.read_text())["classes"]
    pre.mkdir(parents=True, exist_ok=True)
    shutil.copy(cifar / "meta.json", pre / "meta.json")
    for split, limit in (("train", per_class), ("test", test_per_class)):
        with np.load(cifar / f"{split}.npz", allow_pickle=False) as z:
            np.savez(pre / f"{split}.npz", **_subset(z, a, limit, seed))
            sub = _subset(z, b, limit, seed)
        folder = ft / ("train" if split == "train" else "val")
        counts: dict[int, int] = {}
        for img, y in zip(sub["images"], sub["fine_labels"], strict=True):
            d = folder / names[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            counts[int(y)] = counts.get(int(y), 0) + 1
            Image.fromarray(img).save(d / f"{counts[int(y)]:04d}.png")
    classes = [names[c] for c in b]
    done.write_text(json.dumps({"classes": classes, "pretrain_classes": [names[c] for c in a]}))
    return classes


def _config(name: str, run_dir: Path, data: dict, model: dict, args: argparse.Namespace, **extra: Any) -> dict:
    cfg = {
        "name": name,
        "run_dir": str(run_dir),
        "seed": args.seed,
        "data": {"val_fraction": 0.1, "batch_size": args.batch_size, "eval_batch_size": 256, **data},
        "model": model,
        "ssal": {"branches": [], "eta": 0.5, "aux_weights": 0.5},
        "optim": {"lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "warmup_cosine", "warmup_epochs": 0},
        "trainer": {"epochs": 1, "progress_bar": False, "threads": args.threads, "precision": args.precision},
    }
    for k, v in extra.items():
        cfg[k] = {**cfg[k], **v} if isinstance(cfg.get(k), dict) else v
    return cfg


def _run(argv: list[str]) -> None:
    print("+ ssal " + " ".join(argv), flush=True)
    code = ssal_main(argv)
    if code != 0:
        raise SystemExit(f"ssal {argv[0]} failed with exit code {code}")


def _write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _row(label: str, run: Path) -> str:
    ev = json.loads((run / "eval.json").read_text())
    rows = [r for r in _metrics(run) if r.get("wall_seconds")]
    secs = f"{float(rows[-1]['wall_seconds']):.0f}" if rows else "-"

    def f(k: str) -> str:
        return "-" if ev.get(k) is None else f"{ev[k]:.2f}"

    return f"| {label} | {f('tr_top1')} | {f('tr_top5')} | {f('jp_top1')} | {f('lc_top1')} | {secs} |"


def _metrics(run: Path) -> list[dict[str, str]]:
    from ssal.runs import read_metrics

    return read_metrics(run / "metrics.csv")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, required=True, help="CIFAR-100 NumPy folder (train.npz, test.npz, meta.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="resnet18_cifar", help="registered, torchvision:<name> or timm:<name>")
    p.add_argument("--model-options", type=yaml.safe_load, default={}, help="YAML mapping of builder options")
    p.add_argument("--branches", type=yaml.safe_load, default="paper", help="'paper' or a YAML list of branches")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--per-class", type=int, default=None, help="training images per class (default: all 500)")
    p.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all 100)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--finetune-lr", type=float, default=0.02)
    p.add_argument("--backbone-lr-scale", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precision", default="auto", help="trainer.precision of every run (auto: bf16 where fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-scratch", action="store_true", help="leave out the from-scratch run (only SSAL vs none)")
    return p


def _train_and_evaluate(cfg: dict, out: Path, run_dir: Path, epochs: int | None = None) -> None:
    """Train (or resume) the run of ``cfg`` unless it is evaluated already, then evaluate it."""
    if (run_dir / "eval.json").is_file():
        return
    if epochs is None or not (run_dir / "checkpoints" / "last.ckpt").is_file() or len(_metrics(run_dir)) < epochs:
        _run(["train", "--config", str(_write(cfg, out / f"{cfg['name']}.yaml")), "--resume"])
    _run(["evaluate", str(run_dir)])


def run(argv: list[str] | None = None) -> Path:
    """Run every step; returns the path of the table."""
    args = _parser().parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_data(args.cifar, out, args.per_class, args.test_per_class, args.seed)
    model = {"name": args.model, "options": dict(args.model_options), "input_size": 32}
    # 1. pre-training on classes A (arrays)
    pre_data = {"name": "cifar100", "root": str(out / "data" / "pretrain"), "augment": "cifar"}
    pre = _config("pretrain", out / "pretrain", pre_data, model, args, trainer={"epochs": args.pretrain_epochs})
    pre_dir = out / "pretrain"
    _train_and_evaluate(pre, out, pre_dir, args.pretrain_epochs)
    # 2./3. fine-tuning on classes B (PNG ImageFolder): baseline (no SSAL) and SSAL
    ft_data = {"name": "folder", "root": str(out / "data" / "finetune"), "workers": 0}
    ft_model = {**model, "pretrained": str(pre_dir / "checkpoints" / "best.ckpt")}
    ft = _config(
        "finetune",
        out / "finetune",
        ft_data,
        ft_model,
        args,
        ssal={"branches": args.branches, "eta": 0.5, "aux_weights": 0.5},
        optim={"lr": args.finetune_lr, "backbone_lr_scale": args.backbone_lr_scale},
        trainer={"epochs": args.finetune_epochs},
    )
    _run(["pipeline", "--config", str(_write(ft, out / "finetune.yaml")), "--out", str(out / "finetune")])
    # 4. SSAL with groups from a linear probe on the pre-trained features (one pass, no baseline run)
    pr_dir = out / "finetune_probe"
    pr = {**ft, "name": "finetune_probe", "run_dir": str(pr_dir), "ssal": {**ft["ssal"], "groupings": "probe"}}
    _train_and_evaluate(pr, out, pr_dir)
    # 5. from scratch on classes B, no SSAL, as many epochs as pre-training + fine-tuning
    scratch_epochs = args.pretrain_epochs + args.finetune_epochs
    sc = _config("scratch", out / "scratch", ft_data, model, args, trainer={"epochs": scratch_epochs})
    if not args.no_scratch:
        _train_and_evaluate(sc, out, out / "scratch")
    return _write_table(args, out, scratch_epochs)


def _write_table(args: argparse.Namespace, out: Path, scratch_epochs: int) -> Path:
    """transfer.md: the runs' accuracies (printed too)."""
    sc_dir, pre_dir = out / "scratch", out / "pretrain"
    lines = [
        "# Transfer on CIFAR-100: pre-train on 50 classes, fine-tune on the other 50 (PNG ImageFolder)",
        "",
        f"Model `{args.model}`, input 32x32; pre-training {args.pretrain_epochs} epochs (arrays), fine-tuning "
        f"{args.finetune_epochs} epochs (backbone lr x{args.backbone_lr_scale:g}), scratch {scratch_epochs} epochs; "
        f"training images per class: {args.per_class or 'all'}. Test split: CIFAR's test images of the 50 new "
        "classes. Accuracies in %.",
        "",
        "| run | +TR top-1 | +TR top-5 | +JP top-1 | +LC top-1 | train s |",
        "|---|---|---|---|---|---|",
        *([_row("scratch (no SSAL)", sc_dir)] if (sc_dir / "eval.json").is_file() else []),
        _row("fine-tuned (no SSAL)", out / "finetune" / "baseline"),
        _row("fine-tuned + SSAL (groups: fine-tuned baseline's confusion)", out / "finetune" / "ssal"),
        _row("fine-tuned + SSAL (groups: linear probe, one pass)", out / "finetune_probe"),
        "",
        f"Pre-training on the first 50 classes reached {_row('', pre_dir).split('|')[2].strip()} % test top-1.",
    ]
    table = out / "transfer.md"
    table.write_text("\n".join(lines) + "\n")
    print(table.read_text())
    return table


if __name__ == "__main__":
    run(sys.argv[1:])
