"""``ssal evaluate RUN_DIR``: +TR / +JP / +LC top-1/top-5, group accuracy per branch and parameter count."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_run_inputs

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate",
        help="test accuracy of a run: +TR, +JP, +LC, group accuracy, parameters",
        description="Evaluate a run on its test split. +LC is fitted on the held-out validation split with the "
        "model frozen. Prints a Markdown table and writes RUN_DIR/eval.md and eval.json; a run trained with an "
        "MLflow or W&B logger gets the numbers logged to that run too (RUN_DIR/loggers.json).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=("test", "val"), help="split to report on (default test)")
    add_run_inputs(p)
    p.add_argument("--tta", default="none", choices=("none", "flip"), help="test-time augmentation (flip: average "
                   "the logits of each image and its mirror)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the run, evaluate it, print and save the table."""
    from ..lock import run_lock

    # not while another command writes into the run (a training, another evaluate)
    with run_lock(args.run_dir, "evaluate", create=False):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_run, format_report, save_report
    from ..runs import load_run
    from ..runtime import parse_device

    device = parse_device(args.device)  # a bad --device fails before any work
    info = load_run(args.run_dir, args.checkpoint, data_root=args.data_root)  # e.g. a released run elsewhere
    rep = evaluate_run(info, split=args.split, device=device, tta=args.tta)
    stem = "eval" if args.split == "test" else f"eval_{args.split}"
    if args.checkpoint not in ("best", "last"):  # another checkpoint file: its own report files
        stem += f"_{Path(args.checkpoint).stem}"
    stem += "" if args.tta == "none" else f"_{args.tta}"
    md, _ = save_report(rep, args.run_dir, stem)
    sys.stdout.write(format_report(rep))
    log.info("wrote %s", md)
    from dataclasses import asdict

    from ..engine.loggers import log_evaluation

    for name in log_evaluation(args.run_dir, asdict(rep), stem):  # the run's MLflow / W&B run, if it had one
        log.info("logged %s to the run's %s run", stem, name)
    return 0
