"""``ssal pipeline --config FILE``: baseline -> confusion -> groupings -> SSAL model(s) -> report.md."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_config_arguments

log = logging.getLogger(__name__)

__all__ = ["register", "run", "run_and_print"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` sub-command."""
    p = sub.add_parser(
        "pipeline",
        help="the whole method: baseline, confusion, groupings, SSAL model, evaluation, report",
        description="Train a baseline (the config without branches), compute its confusion matrix on the held-out "
        "split, group the classes (ssal.branches k and ssal.criterion), train the SSAL model (every variant, or "
        "--variant NAME), evaluate all, and write OUT/report.md. Re-running resumes and skips finished runs.",
    )
    add_config_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the config's run_dir)")
    p.add_argument(
        "--one-pass",
        action="store_true",
        help="make the groups inside the SSAL run from its own validation confusion (ssal.groupings=online at "
        "ssal.group_epoch) instead of from a separate baseline run",
    )
    p.set_defaults(func=run)


def run_and_print(raw: dict, overrides: dict, out: Path | None, one_pass: bool = False) -> int:
    """Run the pipeline and print where the report is (shared with ``ssal demo``)."""
    from lightning.pytorch.utilities import rank_zero_only

    from ..pipeline import report_table, run_pipeline

    runs = run_pipeline(raw, overrides, out, one_pass=one_pass)
    if rank_zero_only.rank != 0:  # DDP worker processes re-run the command; only rank 0 reports
        return 0
    root = Path(runs[0].config.run_dir).parent
    sys.stdout.write(report_table(runs) + "\n\n")
    sys.stdout.write(f"report: {root / 'report.md'}\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Resolve the config and run the pipeline."""
    from ..config import parse_overrides, read_yaml
    from ..errors import SSALError

    if args.config is None:
        raise SSALError("give --config FILE (e.g. configs/demo.yaml)")
    raw = read_yaml(args.config)
    if args.variant is not None:
        raw = {**raw, "pipeline": {**(raw.get("pipeline") or {}), "variants": [args.variant]}}
    return run_and_print(raw, parse_overrides(args.overrides), args.out, one_pass=args.one_pass)
