"""``ssal export RUN_DIR --format onnx|torchscript --out FILE [--mode jp|tr]``: a self-contained model file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="export a run as ONNX or TorchScript (pixels in [0, 1] -> probabilities + group probabilities)",
        description="Export the model of a run. The exported model takes an image batch (B, 3, H, W) with pixels "
        "in [0, 1] and returns the class probabilities (+JP, or the main classifier's with --mode tr) followed "
        "by each branch's group probabilities. FILE.json records output names, class names and groupings. "
        "The export is checked against ssal's own outputs on a random batch (max abs difference <= 1e-4).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), dest="fmt")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p.add_argument("--mode", default="jp", choices=("jp", "tr"), help="jp: joint probability (default); tr: main f")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then verify the file against ssal's outputs (skipped for ONNX without onnxruntime)."""
    import importlib.util

    import torch

    from ..errors import SSALError
    from ..export import export_run, max_difference, run_exported, ssal_outputs
    from ..predict import input_size
    from ..runs import load_run

    info = load_run(args.run_dir, args.checkpoint)
    path = export_run(info, args.out, args.fmt, args.mode)
    if args.fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: the ONNX file was not checked")
        diff = None
    else:
        x = torch.rand(3, *input_size(info), generator=torch.Generator().manual_seed(0))
        diff = max_difference(ssal_outputs(info, x, args.mode), run_exported(path, x, args.fmt))
        if diff > 1e-4:
            raise SSALError(f"exported model differs from ssal's outputs by {diff:.2e} (> 1e-4)")
    outs = ", ".join(["probs", *info.model.branch_names])
    check = "not checked" if diff is None else f"max abs difference to ssal {diff:.1e}"
    sys.stdout.write(f"wrote {path} ({args.fmt}, mode {args.mode}; outputs {outs}; {check})\n")
    return 0
