"""``ssal bench``: measure training speed, SSAL branch cost, grouping time and joint-prediction overhead."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write_json

log = logging.getLogger(__name__)

#: Goals checked by the report (key, comparison, bound); docs/benchmarks.md explains each.
GOALS = {
    "engine_vs_bare": (">=", 0.95),
    "train_gflops_fraction_of_peak": (">=", 0.35),
    "grouping_seconds_c1000_k500": ("<", 1.0),
}
#: The one light SSAL branch used for the headline measurements (fastnet_cifar's default).
QUICK_BRANCHES = [{"at": "g2", "k": 20, "head": "conv128-gap"}]
FULL_MODELS = [
    ("resnet18_cifar", 100, 64),
    ("resnet18_tiny", 200, 32),
    ("resnet50_cifar", 100, 16),
    ("wrn28_10", 100, 8),
    ("sewrn16_8", 100, 16),
    ("densenet_bc_100_12", 100, 32),
    ("densenet_bc_190_40", 100, 4),
    ("resnet50_imagenet", 1000, 4),
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    p = sub.add_parser(
        "bench",
        help="measure speed (see docs/benchmarks.md)",
        description="Measure training throughput, SSAL cost and overheads on this machine.",
    )
    p.add_argument("--quick", action="store_true", help="headline numbers only (under a minute on 2 CPU cores)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--model", default=None, help="model of the headline measurements (default fastnet_cifar)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 with --quick, else 256")
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "32", "bf16-mixed", "16-mixed"],
        help="auto (default): bf16-mixed on GPUs and CPUs with bf16 hardware (AMX), else fp32; with --config it "
        "replaces trainer.precision",
    )
    p.add_argument("--no-channels-last", action="store_true", help="NCHW (with --config: trainer.channels_last=false)")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="measure this training config instead: its model, options, branches, batch size, precision, layout, "
        "trainer.compile and trainer.threads",
    )
    p.add_argument(
        "--num-classes", type=int, default=None, help="class count with --config (default: the config's data set)"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 4 quick, 8 full)")
    p.set_defaults(func=run)


def headline(s: Any, branches: list[dict[str, Any]] | None = None, cfg: Any = None, data: Any = None) -> dict[str, Any]:
    """The goal metrics for one model and setting (default branches: ``QUICK_BRANCHES``).

    With ``cfg`` and ``data`` (``--config``) the training path runs on the config's own data set and loader.
    """
    import torch

    from .. import bench
    from ..hardware import resolve_precision

    precision = resolve_precision(s.precision, "cuda" if torch.cuda.is_available() else "cpu")
    used = torch.float32 if precision == "32-true" else torch.float16 if precision == "16-mixed" else torch.bfloat16
    branches = QUICK_BRANCHES if branches is None else branches
    cost = bench.interleaved_step_cost(s, branches)  # baseline and SSAL steps alternate: same background load
    dtypes = (used,) if used == torch.bfloat16 else (used, torch.bfloat16)
    # the headline trains the bare backbone; a config trains what `ssal train` would, its branches included
    path = bench.interleaved_train_path(s, () if cfg is None else branches, cfg, data, peak_dtypes=dtypes)
    name = str(used).replace("torch.", "")
    return {
        "settings": {
            "model": s.model,
            "model_options": s.model_options,
            "batch_size": s.batch_size,
            "precision": s.precision,
            "channels_last": s.channels_last,
            "input_size": list(s.image_size()),
            "compile": bool(cfg is not None and cfg.trainer.compile),
            "ssal_branches": branches,
            "data": "synthetic" if data is None else getattr(data, "name", "config"),
        },
        "training_precision": precision,
        "bf16_matmul_peak_gflops": path["bfloat16_matmul_peak_gflops"],
        "matmul_peak_gflops": path[f"{name}_matmul_peak_gflops"],
        "bare_img_per_s": cost["base_img_per_s"],
        "bare_loader_img_per_s": path["bare_loader_img_per_s"],
        "engine_img_per_s": path["engine_img_per_s"],
        "engine_vs_bare": path["engine_vs_bare"],
        "ssal_img_per_s": cost["ssal_img_per_s"],
        "ssal_step_cost": cost["ratio"],
        "branch_flop_share": bench.branch_flop_share(s, branches),
        "train_step_gflop": path["train_step_gflop"],
        "train_gflops": path["engine_gflops"],
        "bare_loader_gflops": path["bare_loader_gflops"],
        # judged against the matmul peak of the precision actually used (bf16 may be emulated)
        "train_gflops_fraction_of_peak": path[f"engine_fraction_of_{name}_peak"],
        "train_gflops_fraction_of_bf16_peak": path["engine_fraction_of_bfloat16_peak"],
        "grouping_seconds_c1000_k500": bench.grouping_seconds(),
        "joint_prediction_overhead": bench.joint_prediction_overhead(s, branches),
    }


def per_model(s: Any) -> list[dict[str, Any]]:
    """Every paper backbone with and without its paper SSAL branches: img/s, step cost and FLOP share."""
    import dataclasses

    from .. import bench
    from ..models import paper_branches

    rows = []
    for name, C, bs in FULL_MODELS:
        ms = dataclasses.replace(s, model=name, num_classes=C, batch_size=bs, steps=3, warmup=1)
        branches = paper_branches(name, C)
        cost = bench.interleaved_step_cost(ms, branches)
        rows.append(
            {
                "model": name,
                "batch_size": bs,
                "img_per_s": cost["base_img_per_s"],
                "ssal_img_per_s": cost["ssal_img_per_s"],
                "ssal_step_cost": cost["ratio"],
                "branch_flop_share": bench.branch_flop_share(ms, branches),
            }
        )
        log.info("%s: %.1f img/s, SSAL %.1f img/s", name, cost["base_img_per_s"], cost["ssal_img_per_s"])
    return rows


def from_config(
    path: Path, s: Any, num_classes: int | None, batch_size: int | None
) -> tuple[Any, list[dict[str, Any]]]:
    """Bench settings and branches of a training config (the measurement's step counts are kept).

    ``num_classes`` defaults to the class count of the config's data set (``data.num_classes`` for folders).
    """
    import dataclasses

    from ..build import branch_configs, input_geometry, load_data
    from ..config import load_config
    from ..data import dataset_spec

    cfg = load_config(path)
    if num_classes is None:
        num_classes = load_data(cfg.data, dry_run=True).num_classes
    t = cfg.trainer
    s = dataclasses.replace(
        s,
        model=cfg.model.name,
        model_options=dict(cfg.model.options),
        num_classes=num_classes,
        batch_size=batch_size or cfg.data.batch_size,
        precision=str(t.precision),
        channels_last=t.channels_last,
        # the size `ssal train` feeds: an in-memory data set's own images, else the config's model input size
        input_size=dataset_spec(cfg.data.name).input_size or input_geometry(cfg)[0],
    )
    return s, branch_configs(cfg, num_classes)


NOT_JUDGED = "not judged: machine busy"


def judge(ok: bool, busy: bool) -> str:
    """'met' / 'NOT met', or ``NOT_JUDGED`` when other processes loaded the machine during the measurements."""
    return NOT_JUDGED if busy else "met" if ok else "NOT met"


def goal_lines(r: dict[str, Any]) -> list[str]:
    """One line per goal: value, bound, and met, NOT met or not judged (machine busy)."""
    busy = bool(r.get("load", {}).get("busy", False))
    lines = []
    for key, (op, bound) in GOALS.items():
        v = r[key]
        ok = v >= bound if op == ">=" else v < bound
        lines.append(f"{key:<38} {v:10.3f}   goal {op} {bound:<5} {judge(ok, busy)}")
    bound = 1.05 * (1 + r["branch_flop_share"])
    ok = r["ssal_step_cost"] <= bound
    lines.append(
        f"{'ssal_step_cost':<38} {r['ssal_step_cost']:10.3f}   goal <= 1.05 x (1 + share) = {bound:.3f} "
        f"{judge(ok, busy)}"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    """Check the options, then measure with the config's thread count (``trainer.threads``)."""
    from .. import bench, cpuload
    from ..errors import SSALError
    from ..hardware import num_threads

    if args.config is not None and args.model is not None:
        raise SSALError("--model does not apply with --config: the config's model.name is measured")
    if args.config is None and args.num_classes is not None:
        raise SSALError("--num-classes applies with --config only (the headline model has 100 classes)")
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--steps", args.steps),
        ("--num-classes", args.num_classes),
    ):
        if value is not None and value < (2 if flag == "--num-classes" else 1):
            raise SSALError(f"{flag} must be at least {2 if flag == '--num-classes' else 1}, got {value}")
    t0 = time.perf_counter()
    before = cpuload.cpu_snapshot()
    sizes = {"batch_size": 64, "steps": 4, "warmup": 2} if args.quick else {"batch_size": 256, "steps": 8, "warmup": 3}
    if args.batch_size:
        sizes["batch_size"] = args.batch_size
    if args.steps:
        sizes["steps"] = args.steps
    s = bench.BenchSettings(
        model=args.model or "fastnet_cifar",
        precision=args.precision or "auto",
        channels_last=not args.no_channels_last,
        **sizes,
    )
    branches, cfg, data = None, None, None
    if args.config:
        s, branches, cfg, data = config_and_data(args.config, s, args.num_classes, args.batch_size)
        if args.precision is not None:  # the command line wins over the config, as --batch-size does
            s.precision = cfg.trainer.precision = args.precision
        if args.no_channels_last:
            s.channels_last = cfg.trainer.channels_last = False
    with num_threads(cfg.trainer.threads if cfg is not None else 0):  # what `ssal train` runs the config with
        return _measure(args, s, branches, cfg, data, t0, before)


def _measure(args: argparse.Namespace, s: Any, branches: Any, cfg: Any, data: Any, t0: float, before: Any) -> int:
    """Run the measurements of ``run``, print them and write the JSON."""
    import datetime

    from .. import bench, cpuload

    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": bench.machine_info(),
        "quick": bool(args.quick),
    }
    result.update(headline(s, branches, cfg, data))
    if not args.quick:
        result["models"] = per_model(s)
    load = cpuload.load_between(before, cpuload.cpu_snapshot())
    result["load"] = load.to_dict()
    result["seconds"] = time.perf_counter() - t0
    print(f"machine: {result['machine']}")
    print(load.describe())
    for key in (
        "matmul_peak_gflops",
        "bf16_matmul_peak_gflops",
        "bare_img_per_s",
        "bare_loader_img_per_s",
        "engine_img_per_s",
        "ssal_img_per_s",
        "train_gflops",
        "bare_loader_gflops",
        "branch_flop_share",
        "joint_prediction_overhead",
    ):
        print(f"{key:<38} {result[key]:10.4g}")
    for line in goal_lines(result):
        print(line)
    for row in result.get("models", []):
        print(
            f"{row['model']:<20} bs {row['batch_size']:>3}  {row['img_per_s']:8.1f} img/s  SSAL "
            f"{row['ssal_img_per_s']:8.1f} img/s  step cost {row['ssal_step_cost']:.3f}  "
            f"FLOP share {row['branch_flop_share']:.3f}"
        )
    print(f"total {result['seconds']:.1f} s")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def config_and_data(
    path: Path, s: Any, num_classes: int | None, batch_size: int | None
) -> tuple[Any, list[dict[str, Any]], Any, Any]:
    """``from_config`` plus the config itself and its training data (what ``ssal train`` would load); synthetic
    images of the same size (None) when that data is not on this machine and cannot be fetched."""
    from ..build import load_data
    from ..config import load_config
    from ..errors import SSALError

    s, branches = from_config(path, s, num_classes, batch_size)
    cfg = load_config(path)
    cfg.data.batch_size = s.batch_size
    try:
        return s, branches, cfg, load_data(cfg.data, ("train",))
    except SSALError as e:
        log.warning("the config's data is not available (%s): the training path is timed on synthetic images", e)
        return s, branches, cfg, None
