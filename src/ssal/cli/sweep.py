"""``ssal sweep --config FILE --trials N key=SPACE ...``: hyper-parameter search with Optuna (``ssal.sweep``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` sub-command."""
    p = sub.add_parser(
        "sweep",
        help="hyper-parameter search over config keys (Optuna; pip install 'ssal[sweep]')",
        description="Search config keys with Optuna. A space is key=float:LOW:HIGH[:log], key=int:LOW:HIGH[:STEP] "
        "or key=choice:A,B,...; other key=value words are fixed overrides. Each trial is a run directory "
        "OUT/trial_NNN, its objective a validation metric of the last epoch; bad trials are pruned after a "
        "validation. The study is kept in OUT/study.db: the same command again goes on where it stopped. Writes "
        "OUT/trials.csv, trials.md, best.yaml (a config for ssal train), history.png and importance.png.",
    )
    p.add_argument("--config", type=Path, metavar="FILE", required=True, help="YAML config of every trial")
    p.add_argument("--variant", metavar="NAME", help="one of the config's variants")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="finished trials the study should have")
    p.add_argument("--study", metavar="NAME", default=None,
                   help="study name (default: the run name: demo, or demo_small with --variant small)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default: runs/<study>_sweep)")
    p.add_argument("--metric", default="f_top1", help="validation metric to optimise: f_top1 (default), jp_top1, "
                   "f_top5, val_loss, ... (a column of metrics.csv)")  # fmt: skip
    p.add_argument("--direction", choices=("maximize", "minimize"), default=None,
                   help="default: minimize for *loss, else maximize")  # fmt: skip
    p.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="Optuna pruner (default median: stop a trial below the median of earlier ones at that epoch)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of Optuna's TPE sampler")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="SECONDS",
        help="a trial that sent no heartbeat "
        "for 2x this long was killed: the next sweep retries it from its last checkpoint (default 30)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=SPACE", help="search spaces and fixed key=value overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse the spaces, run the study, print the table of trials."""
    from ..config import parse_overrides, read_yaml, run_name
    from ..sweep import run_sweep, split_space_args

    spaces, fixed = split_space_args(args.overrides)
    raw, fixed = read_yaml(args.config), parse_overrides(fixed)
    study = args.study or run_name(raw, args.variant, fixed)  # a variant's own study (demo_small)
    out = args.out or Path("runs") / f"{study}_sweep"
    res = run_sweep(raw, spaces, fixed, trials=args.trials, out=out, study_name=study,
                    metric=args.metric, direction=args.direction, pruner=args.pruner, variant=args.variant,
                    seed=args.seed, heartbeat=args.heartbeat)  # fmt: skip
    sys.stdout.write((out / "trials.md").read_text(encoding="utf-8"))
    if res.best_config is not None:
        sys.stdout.write(f"best config: {res.best_config} (ssal train --config {res.best_config})\n")
    return 0
