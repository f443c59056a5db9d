"""``ssal demo [--out DIR]``: the whole pipeline on scikit-learn digits with a small CNN (no download, no file)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DEMO_CONFIG", "register", "run"]

#: The demo's config (identical to configs/demo.yaml; a test checks that they agree). One thread: tiny convs gain
#: nothing from more, and a busy CPU makes multi-threaded small ops much slower (measured: 15x).
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "run_dir": "ssal-demo",
    "seed": 0,
    "data": {
        "name": "digits",
        "val_fraction": 0.2,
        "augment": "shift",
        "max_shift": 1,
        "batch_size": 64,
        "eval_batch_size": 512,
    },
    "model": {"name": "small_cnn", "options": {"width": 16}},
    "ssal": {
        "branches": [{"at": "g2", "k": 4, "head": "conv32-gap"}, {"at": "g3", "k": 5, "head": "conv32-gap"}],
        "groupings": "confusion",
        "criterion": "join",
        "eta": 0.5,
        "aux_weights": 0.5,
    },
    "optim": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4},
    "schedule": {"name": "triangular", "peak_epoch": 2},
    "trainer": {"epochs": 5, "precision": "32", "channels_last": False, "log_every_n_steps": 10, "threads": 1},
}


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
    from ..config import parse_overrides
    from .pipeline import run_and_print

    return run_and_print(DEMO_CONFIG, parse_overrides(args.overrides), args.out)
