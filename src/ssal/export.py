"""Export a trained SSAL run as a self-contained TorchScript or ONNX model, or f's plain weights.

The exported model takes an image batch (B, 3, H, W) with pixels in [0, 1] (normalisation is inside) and
returns a tuple: the class probabilities (+JP, paper Sec. 3.4, or the main classifier's softmax in ``tr`` mode),
then each branch's group probabilities softmax(g_i), (B, k_i). A JSON file next to it (``FILE.json``) records
the output names, class names, groupings, input size and mode.

``state_dict`` writes the main classifier f alone: the backbone's ``state_dict`` without the branches and without
the input normalisation, loadable by the code that builds the model (``torchvision.models.get_model(name,
num_classes=C)``, ``timm.create_model(name, num_classes=C)``, ``ssal.models.create_model(name, C)``); the JSON file
records the model name, its builder options, the class names and the mean/std to normalise inputs with.

ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the dynamo exporter of
recent torch needs the ``onnxscript`` package, which is not a dependency of ssal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architecture import SSALModel
from .errors import SSALError
from .files import atomic_write, atomic_write_json
from .models import create_model
from .models.zoo import split_name, tv_builder_options
from .prediction import class_log_probs
from .runs import RunInfo
from .runtime import class_names, eval_mode, input_size, run_outputs

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_MODES",
    "ExportWrapper",
    "export_mode",
    "export_run",
    "export_state_dict",
    "load_exported_state_dict",
    "run_exported",
    "ssal_outputs",
    "verify_export",
]

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torchscript", "state_dict")
EXPORT_MODES = ("jp", "tr")
ONNX_OPSET = 17


class ExportWrapper(nn.Module):
    """SSAL model -> (class probabilities, softmax(g_1), ..., softmax(g_n)); a pure function of the pixels."""

    def __init__(self, model: SSALModel, mode: str = "jp", eta: Sequence[float] = (), temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.mode = model, export_mode(model, mode)
        self.eta = [float(e) for e in eta] if eta else [1.0] * len(model.branches)
        self.temperature = float(temperature)  # +TS: the class log-probabilities are divided by it

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x, with_branches=True)
        return (class_log_probs(out, self.model.gammas, self.eta, self.mode, self.temperature).exp(),
                *(a.float().softmax(-1) for a in out.aux))  # fmt: skip


@torch.no_grad()
def ssal_outputs(
    info: RunInfo, x: torch.Tensor, mode: str = "jp", temperature: float = 1.0
) -> tuple[torch.Tensor, ...]:
    """The reference outputs (what the exported model must reproduce), computed by ssal itself in eval mode."""
    out = run_outputs(info, x)
    main = class_log_probs(out, info.gammas, info.eta, mode, temperature).exp()
    return tuple(t.cpu() for t in (main, *(a.float().softmax(-1) for a in out.aux)))


def export_mode(model: SSALModel, mode: str) -> str:
    """The mode the exported probabilities really have: ``tr`` for a model without branches (it has no +JP)."""
    if mode not in EXPORT_MODES:
        raise SSALError(f"--mode must be one of {', '.join(EXPORT_MODES)}, got {mode!r}")
    return mode if model.branches else "tr"


def output_names(info: RunInfo) -> list[str]:
    """Names of the exported outputs: ``probs`` then the branch names (g1, g2, ...)."""
    return ["probs", *info.model.branch_names]


def _metadata(info: RunInfo, fmt: str, mode: str, temperature: float = 1.0) -> dict[str, Any]:
    return {
        "format": fmt,
        "mode": mode,
        "temperature": temperature,
        "input": {"name": "image", "shape": ["batch", *input_size(info)], "range": [0.0, 1.0]},
        "outputs": output_names(info),
        "class_names": class_names(info),
        "groupings": {n: list(g.assignment) for n, g in zip(info.model.branch_names, info.groupings, strict=True)},
        "eta": list(info.eta),
        "run_dir": str(info.paths.root),
        "checkpoint": str(info.checkpoint),
    }


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """torch 2.14 marks torch.jit and the TorchScript ONNX exporter deprecated; both still work (see module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(torch\.jit|TorchScript-based ONNX|will be removed).*")
        yield


def _export_onnx(wrapper: nn.Module, x: torch.Tensor, path: Path, outputs: list[str]) -> None:
    dyn = {n: {0: "batch"} for n in ["image", *outputs]}
    torch.onnx.export(
        wrapper,
        (x,),
        str(path),
        input_names=["image"],
        output_names=outputs,
        dynamic_axes=dyn,
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def builder_call(info: RunInfo) -> tuple[str, dict[str, Any]]:
    """The code line that builds the run's plain backbone f, and the builder options it takes."""
    m = info.config.model
    src, base = split_name(m.name)
    opts = dict(m.options)
    if src == "torchvision":
        opts = tv_builder_options(base, m.pretrained, opts)
        call = f"torchvision.models.get_model({base!r}, num_classes={info.num_classes}, **options)"
    elif src == "timm":
        call = f"timm.create_model({base!r}, num_classes={info.num_classes}, **options)"
    else:
        call = f"ssal.models.create_model({base!r}, {info.num_classes}, **options)"
    return call, opts


def export_state_dict(info: RunInfo, out: str | os.PathLike) -> Path:
    """Write f's weights (no branches, no normalisation buffers) to ``out`` and ``out + '.json'`` metadata."""
    out = Path(out)
    state = {k: v.detach().cpu().contiguous() for k, v in info.model.backbone.state_dict().items()}
    atomic_write(out, lambda p: torch.save(state, p))
    call, opts = builder_call(info)
    meta = {
        "format": "state_dict",
        "model": info.config.model.name,
        "options": opts,
        "num_classes": info.num_classes,
        "class_names": class_names(info),
        "input_size": list(input_size(info)),
        "mean": [round(v, 6) for v in info.model.mean.flatten().tolist()] if info.model.normalize else None,
        "std": [round(v, 6) for v in info.model.std.flatten().tolist()] if info.model.normalize else None,
        "input": "pixels in [0, 1], minus mean, divided by std" if info.model.normalize else "pixels in [0, 1]",
        "build": f"model = {call}; model.load_state_dict(torch.load(FILE, weights_only=True))",
        "run_dir": str(info.paths.root),
        "checkpoint": str(info.checkpoint),
    }
    atomic_write_json(out.with_name(out.name + ".json"), meta)
    return out


def load_exported_state_dict(path: str | os.PathLike) -> nn.Module:
    """Rebuild the plain model of a ``state_dict`` export from its JSON metadata (eval mode, strict loading)."""
    path = Path(path)
    side = path.with_name(path.name + ".json")
    if not side.is_file():
        raise SSALError(f"{side} not found: the metadata of a state_dict export")
    meta = json.loads(side.read_text(encoding="utf-8"))
    model = create_model(meta["model"], int(meta["num_classes"]), pretrained=False, **meta["options"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def export_run(
    info: RunInfo, out: str | os.PathLike, fmt: str = "onnx", mode: str = "jp", temperature: float = 1.0
) -> Path:
    """Write the run's model to ``out`` as ONNX, TorchScript (traced) or f's state_dict, plus ``out + '.json'``.

    ``temperature`` (+TS, e.g. from ``ssal.evaluation.load_temperatures``) is baked into the class probabilities.
    """
    if fmt not in EXPORT_FORMATS:
        raise SSALError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "state_dict":
        return export_state_dict(info, out)
    out, model = Path(out), info.model
    device = next(model.parameters()).device
    x = torch.rand(2, *input_size(info))
    try:  # export from CPU in eval mode; the caller's model gets its device and modes back
        with eval_mode(model.cpu()):
            wrapper = ExportWrapper(model, mode, info.eta, temperature).eval()
            if fmt == "torchscript":
                with torch.no_grad(), _quiet_deprecations():
                    traced = torch.jit.trace(wrapper, (x,), check_trace=False)
                atomic_write(out, lambda p: traced.save(str(p)))
            else:
                with _quiet_deprecations():
                    atomic_write(out, lambda p: _export_onnx(wrapper, x, p, output_names(info)))
    finally:
        model.to(device)
    atomic_write_json(out.with_name(out.name + ".json"), _metadata(info, fmt, wrapper.mode, temperature))
    return out


def run_exported(path: str | os.PathLike, x: torch.Tensor, fmt: str | None = None) -> tuple[torch.Tensor, ...]:
    """Run an exported file on ``x`` (TorchScript with torch.jit, ONNX with onnxruntime); returns CPU tensors."""
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix.lower() == ".onnx" else "torchscript")
    if fmt == "torchscript":
        with _quiet_deprecations():
            m = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return tuple(t.cpu() for t in m(x.cpu()))
    try:
        import onnxruntime as ort
    except ImportError:
        raise SSALError("running an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its shape-inference notes on scatter ops are not problems of the file
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    res = sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})
    return tuple(torch.from_numpy(r) for r in res)


def max_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between two output tuples (raises if their structure differs)."""
    if len(a) != len(b):
        raise SSALError(f"exported model returns {len(b)} outputs, expected {len(a)}")
    return max(float((u.float() - v.float()).abs().max()) for u, v in zip(a, b, strict=True))


def verify_export(
    info: RunInfo, path: str | os.PathLike, fmt: str, mode: str, temperature: float = 1.0
) -> float | None:
    """The largest difference between the exported file's outputs and ssal's on three random images; ``SSALError``
    above 1e-4. A ``state_dict`` is checked as the plain model on normalised pixels against f's logits (+TR).
    None for ONNX without onnxruntime (not checked)."""
    import importlib.util

    x = torch.rand(3, *input_size(info), generator=torch.Generator().manual_seed(0))
    if fmt == "state_dict":
        plain = load_exported_state_dict(path)
        with torch.no_grad(), eval_mode(info.model):
            ref = info.model(x, with_branches=False).main
            m = info.model
            diff = max_difference((ref,), (plain(((x - m.mean) / m.std) if m.normalize else x),))
        if diff > 1e-4:
            raise SSALError(f"the exported weights give logits {diff:.2e} away from ssal's (> 1e-4)")
        return diff
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: the ONNX file was not checked")
        return None
    diff = max_difference(ssal_outputs(info, x, mode, temperature), run_exported(path, x, fmt))
    if diff > 1e-4:
        raise SSALError(f"exported model differs from ssal's outputs by {diff:.2e} (> 1e-4)")
    return diff
