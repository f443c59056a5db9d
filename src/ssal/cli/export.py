"""``ssal export RUN_DIR --format onnx|torchscript|state_dict --out FILE [--mode jp|tr]``: a model file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import add_checkpoint

log = logging.getLogger(__name__)

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
    import importlib.util

    import torch

    from ..errors import SSALError
    from ..evaluation import load_temperatures
    from ..export import export_mode, export_run, load_exported_state_dict, max_difference, run_exported, ssal_outputs
    from ..runs import load_run
    from ..runtime import input_size

    info = load_run(args.run_dir, args.checkpoint)
    mode = export_mode(info.model, args.mode)  # a baseline run has no +JP: its probabilities are f's
    if args.calibrated and args.fmt == "state_dict":
        raise SSALError("--calibrated applies to onnx and torchscript (a state_dict holds f's weights only)")
    t = load_temperatures(args.run_dir)[mode] if args.calibrated else 1.0
    path = export_run(info, args.out, args.fmt, args.mode, t)
    if args.fmt == "state_dict":  # f alone: the plain model on normalised pixels must give ssal's +TR logits
        x = torch.rand(3, *input_size(info), generator=torch.Generator().manual_seed(0))
        plain = load_exported_state_dict(path)
        with torch.no_grad():
            ref = info.model.eval()(x, with_branches=False).main
            xn = (x - info.model.mean) / info.model.std if info.model.normalize else x
            diff = max_difference((ref,), (plain(xn),))
        if diff > 1e-4:
            raise SSALError(f"the exported weights give logits {diff:.2e} away from ssal's (> 1e-4)")
        name = info.config.model.name
        sys.stdout.write(f"wrote {path} (f's state_dict, {name}; max abs logit difference {diff:.1e})\n")
        return 0
    if args.fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: the ONNX file was not checked")
        diff = None
    else:
        x = torch.rand(3, *input_size(info), generator=torch.Generator().manual_seed(0))
        diff = max_difference(ssal_outputs(info, x, mode, t), run_exported(path, x, args.fmt))
        if diff > 1e-4:
            raise SSALError(f"exported model differs from ssal's outputs by {diff:.2e} (> 1e-4)")
    outs = ", ".join(["probs", *info.model.branch_names])
    check = "not checked" if diff is None else f"max abs difference to ssal {diff:.1e}"
    mode += f", temperature {t:.3f}" if args.calibrated else ""
    sys.stdout.write(f"wrote {path} ({args.fmt}, mode {mode}; outputs {outs}; {check})\n")
    return 0
