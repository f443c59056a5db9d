"""``ssal demo [--out DIR]``: the whole pipeline on scikit-learn digits with a small CNN (no download, no file)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

__all__ = ["DEMO_CONFIG", "DEMO_FILE", "register", "run"]

#: The demo's config: ``demo.yaml`` next to this module (``configs/demo.yaml`` links to it).
DEMO_FILE = Path(__file__).with_name("demo.yaml")
DEMO_CONFIG: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on scikit-learn digits with a small CNN (offline, under a minute on 2 cores)",
        description="Baseline -> confusion -> join-similar groupings -> SSAL model -> report, on the 8x8 digits "
        "of scikit-learn (upsampled to 16x16). Writes report.md and metrics.csv into --out.",
    )
    p.add_argument("--out", type=Path, default=Path("ssal-demo"), help="output folder (default ./ssal-demo)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. trainer.epochs=3")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo pipeline."""
    from ..config import parse_overrides  # command modules import the library when run: `ssal --help` stays fast
    from .pipeline import run_and_print

    return run_and_print(DEMO_CONFIG, parse_overrides(args.overrides), args.out)
