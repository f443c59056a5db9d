"""``ssal explain RUN_DIR IMAGE... --out DIR [--baseline RUN_DIR]``: CAM of g_f, each g_i and a baseline."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_checkpoint

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain`` sub-command."""
    p = sub.add_parser(
        "explain",
        help="class activation maps of the final prediction, each branch's group and a baseline (paper Fig. 6)",
        description="Write one PNG per image (paper Fig. 6): the image, the map of the final prediction g_f "
        "(f's map for the +JP class), one map per branch g_i w.r.t. its predicted group with the group's member "
        "classes underneath, and with --baseline the map of a plain network (org). CAM where the output is "
        "GAP + linear, Grad-CAM otherwise. Unreadable images are reported on stderr; the rest still run.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the PNGs")
    p.add_argument("--baseline", type=Path, metavar="RUN_DIR", help="a baseline run to compare with (org)")
    p.add_argument("--method", default="auto", choices=("auto", "cam", "gradcam"), help="default: auto")
    add_checkpoint(p)
    p.add_argument(
        "--baseline-checkpoint",
        default=None,
        help="the baseline's: best, last or a path (default: --checkpoint when it is best or last, else best)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the run (and baseline), write the figures; exit 2 if any image failed."""
    from ..lock import inside, run_lock

    # not while another command writes into the run (a training, another explain)
    with run_lock(args.run_dir, "explain", create=False, required=inside(args.out, args.run_dir)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..explain import explain_images
    from ..runs import load_run
    from ..runtime import expand_image_paths

    info = load_run(args.run_dir, args.checkpoint)
    which = args.baseline_checkpoint or (args.checkpoint if args.checkpoint in ("best", "last") else "best")
    if args.baseline_checkpoint is not None and not args.baseline:
        from ..errors import SSALError

        raise SSALError("--baseline-checkpoint needs --baseline RUN_DIR")
    baseline = load_run(args.baseline, which) if args.baseline else None
    written, errors = explain_images(info, expand_image_paths(args.images), args.out, baseline, args.method)
    for _, msg in errors:
        print(f"ssal explain: error: {msg}", file=sys.stderr)
    for p in written:
        sys.stdout.write(f"{p}\n")
    return 2 if errors else 0
