"""``ssal confusion RUN_DIR``: the main classifier's confusion matrix on a held-out split (.npy + heatmap)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_run_inputs

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``confusion`` sub-command."""
    p = sub.add_parser(
        "confusion",
        help="confusion matrix of a run on the held-out validation split (feeds ssal group)",
        description="Save the confusion matrix of f (rows: true class, columns: predicted) as .npy, a heatmap "
        ".png and the class names as _classes.txt. Then: ssal group --confusion FILE.npy --k K --out G.json",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--split", default="val", choices=("val", "test", "train"), help="default: val (held out)")
    p.add_argument("--out", type=Path, default=None, help="output .npy (default RUN_DIR/confusion.npy)")
    add_run_inputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute and save the confusion matrix."""
    from ..lock import inside, run_lock

    # not while another command writes into the run (a training, another confusion)
    with run_lock(args.run_dir, "confusion", create=False, required=args.out is None or inside(args.out, args.run_dir)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..evaluation import run_confusion, save_confusion
    from ..runs import load_run
    from ..runtime import parse_device

    device = parse_device(args.device)  # a bad --device fails before any work
    info = load_run(args.run_dir, args.checkpoint, data_root=args.data_root)
    conf = run_confusion(info, args.split, device)
    out = args.out or args.run_dir / ("confusion.npy" if args.split == "val" else f"confusion_{args.split}.npy")
    paths = save_confusion(conf, out, info.class_names)
    acc = 100.0 * conf.trace() / max(conf.sum(), 1)
    sys.stdout.write(f"{out}: {conf.shape[0]} classes, {int(conf.sum())} images, accuracy of f {acc:.2f}%\n")
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0
