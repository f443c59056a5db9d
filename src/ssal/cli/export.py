"""``ssal export RUN_DIR --format onnx|torchscript|state_dict --out FILE [--mode jp|tr]``: a model file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_checkpoint

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="export a run as ONNX or TorchScript (pixels in [0, 1] -> probabilities + group probabilities), "
        "or f's weights as a state_dict",
        description="Export the model of a run. The ONNX/TorchScript model takes an image batch (B, 3, H, W) with "
        "pixels in [0, 1] and returns the class probabilities (+JP, or the main classifier's with --mode tr) "
        "followed by each branch's group probabilities. FILE.json records output names, class names and groupings. "
        "--format state_dict writes the main classifier f alone (no branches), loadable by plain torchvision/timm "
        "code; FILE.json records the model name, builder options, class names and mean/std. "
        "The export is checked against ssal's own outputs on a random batch (max abs difference <= 1e-4).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "state_dict"), dest="fmt")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p.add_argument("--mode", default="jp", choices=("jp", "tr"), help="jp: joint probability (default); tr: main f")
    add_checkpoint(p)
    p.add_argument("--calibrated", action="store_true", help="bake in the +TS temperature of the mode, fitted by "
                   "`ssal evaluate` on the validation split (RUN_DIR/eval.json)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then verify the file against ssal's outputs (skipped for ONNX without onnxruntime)."""
    from ..errors import SSALError
    from ..evaluation import load_temperatures
    from ..export import export_mode, export_run, verify_export
    from ..runs import load_run

    info = load_run(args.run_dir, args.checkpoint)
    mode = export_mode(info.model, args.mode)  # a baseline run has no +JP: its probabilities are f's
    if args.calibrated and args.fmt == "state_dict":
        raise SSALError("--calibrated applies to onnx and torchscript (a state_dict holds f's weights only)")
    t = load_temperatures(args.run_dir)[mode] if args.calibrated else 1.0
    path = export_run(info, args.out, args.fmt, args.mode, t)
    diff = verify_export(info, path, args.fmt, mode, t)
    if args.fmt == "state_dict":
        name = info.config.model.name
        sys.stdout.write(f"wrote {path} (f's state_dict, {name}; max abs logit difference {diff:.1e})\n")
        return 0
    outs = ", ".join(["probs", *info.model.branch_names])
    check = "not checked" if diff is None else f"max abs difference to ssal {diff:.1e}"
    mode += f", temperature {t:.3f}" if args.calibrated else ""
    sys.stdout.write(f"wrote {path} ({args.fmt}, mode {mode}; outputs {outs}; {check})\n")
    return 0
