"""``ssal predict RUN_DIR IMAGE_OR_FOLDER... [--top K] [--json]``: +JP / +TR top-K and each branch's group."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_checkpoint

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    p = sub.add_parser(
        "predict",
        help="classify images: +JP and +TR top-K, each branch's predicted group and its member classes",
        description="Classify PNG/JPEG images (folders expand to their images) with a trained run. Shows the "
        "top-K classes of the joint prediction (+JP) and of the main classifier (+TR), and for every branch g_i "
        "the predicted group, its probability and the classes in it; flags images where +JP and +TR disagree. "
        "Unreadable files are reported one per line on stderr and the rest still run (exit code 2 at the end).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes to list (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_checkpoint(p)
    p.add_argument("--calibrated", action="store_true", help="temperature-scaled probabilities (+TS), with the "
                   "temperatures `ssal evaluate` fitted on the validation split (RUN_DIR/eval.json)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the run, predict every image, print text or JSON; exit 2 if any file failed."""
    from ..errors import SSALError
    from ..evaluation import load_temperatures
    from ..inference import format_prediction, predict_images
    from ..runs import load_run
    from ..runtime import expand_image_paths

    if args.top < 1:
        raise SSALError(f"--top must be at least 1, got {args.top}")
    temps = load_temperatures(args.run_dir) if args.calibrated else None
    info = load_run(args.run_dir, args.checkpoint)
    preds, errors = predict_images(info, expand_image_paths(args.images), top=args.top, temperature=temps)
    for _, msg in errors:
        print(f"ssal predict: error: {msg}", file=sys.stderr)
    if args.json:
        doc = {
            "run_dir": str(args.run_dir),
            "checkpoint": str(info.checkpoint),
            "temperature": temps or {},
            "predictions": [p.to_dict() for p in preds],
            "errors": [{"file": f, "error": m} for f, m in errors],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write("".join(format_prediction(p) + "\n\n" for p in preds))
    return 2 if errors else 0
