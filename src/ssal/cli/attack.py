"""``ssal attack RUN_DIR --method fgsm|bim --eps LIST [--steps N] --out DIR``: robustness of f, g_i and +JP."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_run_inputs

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` sub-command."""
    p = sub.add_parser(
        "attack",
        help="FGSM/BIM on the base network f; error of f, each g_i and +JP per eps (supp. E.3, Fig. 5)",
        description="Attack the main classifier f of a run (the SSAL branches are hidden from the attacker) on "
        "its test split, then report the error of f, the group error of each branch g_i and the error of the "
        "joint prediction +JP for each eps. Writes DIR/attack_<method>.csv and .png and prints a table.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--method", required=True, choices=("fgsm", "bim"))
    p.add_argument(
        "--eps", required=True, metavar="LIST", help="L-inf radii in pixel units, e.g. 0,1/255,2/255,4/255,8/255"
    )
    p.add_argument("--steps", type=int, default=None, help="BIM iterations (default 10; bim only)")
    p.add_argument(
        "--alpha", type=str, default=None, help="BIM step size in pixel units (default 1.25 eps / steps; bim only)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="attack a random subset of N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    p.add_argument("--split", default="test", choices=("test", "val"), help="images to attack (default test)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's data.eval_batch_size")
    add_run_inputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the run and its images, attack for each eps, save CSV + plot, print the table."""
    from ..lock import inside, run_lock

    # not while another command writes into the run (a training, another attack)
    with run_lock(args.run_dir, "attack", create=False, required=inside(args.out, args.run_dir)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..attack import attack_batches, evaluate_attack, format_table, parse_eps, save_attack
    from ..errors import SSALError
    from ..runs import load_run
    from ..runtime import default_device, parse_device

    eps = parse_eps(args.eps, "--eps")
    if args.method != "bim" and (args.steps is not None or args.alpha is not None):
        raise SSALError(f"--steps and --alpha are BIM's; {args.method} takes one step of size eps")
    alpha = parse_eps(args.alpha, "--alpha")[0] if args.alpha is not None else None
    steps = 10 if args.steps is None else args.steps
    if steps < 1:
        raise SSALError(f"--steps must be at least 1, got {steps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise SSALError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise SSALError(f"--limit must be at least 1, got {args.limit}")
    device = parse_device(args.device) or default_device()  # a bad --device fails before any work
    info = load_run(args.run_dir, args.checkpoint, data_root=args.data_root)
    info.model.to(device)
    batches = attack_batches(info, args.split, args.limit, args.seed, args.batch_size, device)
    rows = evaluate_attack(info, batches, args.method, eps, steps, alpha, args.limit)
    csv_path, png = save_attack(rows, args.out, f"{args.method.upper()} on f ({info.paths.root.name})")
    sys.stdout.write(format_table(rows))
    log.info("wrote %s and %s", csv_path, png)
    return 0
