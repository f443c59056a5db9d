"""``ssal train``: train one run from a YAML config (with ``key=value`` overrides) into a run directory."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..errors import SSALError
from .common import add_config_arguments

log = logging.getLogger(__name__)

__all__ = ["ResumeAction", "config_from_args", "register", "run"]


class ResumeAction(argparse.Action):
    """``--resume [RUN_DIR]``: a word with ``=`` after it is an override (``key=value``), never a run directory."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: str | None = None) -> None:
        if isinstance(value, str) and "=" in value:
            namespace.resume_overrides, value = [value], True
        setattr(namespace, self.dest, value)


def config_from_args(args: argparse.Namespace) -> Config:
    """The resolved config of ``--config``/``--variant``/overrides; ``--resume RUN_DIR`` names the run directory
    (and, without ``--config``, the config: ``RUN_DIR/config.yaml``)."""
    resume = getattr(args, "resume", None)
    args.overrides = [*getattr(args, "resume_overrides", []), *args.overrides]
    path = args.config
    if path is None and isinstance(resume, str):
        path = Path(resume) / "config.yaml"
        if not path.is_file():
            raise SSALError(f"{resume} has no config.yaml; give --config FILE")
    if path is None:
        raise SSALError("give --config FILE (e.g. configs/demo.yaml)")
    cfg = load_config(path, args.overrides, args.variant)
    if isinstance(resume, str):
        if any(o.split("=", 1)[0] == "run_dir" for o in args.overrides) and Path(cfg.run_dir) != Path(resume):
            raise SSALError(f"--resume {resume} and run_dir={cfg.run_dir} name two run directories; give one")
        cfg.run_dir = resume
    return cfg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a model (baseline or SSAL) from a YAML config",
        description="Train one run. The run directory holds config.yaml, checkpoints/, metrics.csv, tb/, groupings/.",
    )
    add_config_arguments(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        action=ResumeAction,
        metavar="RUN_DIR",
        help="continue from RUN_DIR/checkpoints/last.ckpt (RUN_DIR defaults to the config's run_dir; "
        "a key=value after --resume is an override)",
    )
    p.add_argument("--dry-run", action="store_true", help="resolve the config and build the model, do not train")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train (or dry-run) it."""
    import yaml

    from ..engine import TrainingDivergedError, fit

    cfg = config_from_args(args)
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    try:
        res = fit(cfg, resume=args.resume is not None, dry_run=args.dry_run)
    except TrainingDivergedError as e:
        print(f"ssal train: error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(f"{cfg.name}: config OK, model {cfg.model.name}, {res.num_params:,} parameters\n")
        return 0
    if not res.is_global_zero:
        return 0
    row = res.last_row or {}
    keys = [k for k in ("epoch", "f_top1", "jp_top1", "wall_seconds") if k in row]
    sys.stdout.write(f"{res.run_dir}: " + ", ".join(f"{k}={row[k]}" for k in keys) + "\n")
    return 0
