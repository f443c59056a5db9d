"""What every command that runs a trained model shares: the device, autocast, eval mode, class names and the
input images (read with Pillow and sized the way the run's data set expects, pixels in [0, 1])."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .build import input_geometry
from .data import dataset_spec
from .data.folder import open_image, to_rgb
from .errors import SSALError
from .hardware import resolve_precision

if TYPE_CHECKING:
    from .architecture import SSALOutput
    from .runs import RunInfo

__all__ = [
    "IMAGE_SUFFIXES",
    "autocast",
    "class_names",
    "default_device",
    "eval_mode",
    "expand_image_paths",
    "image_transform",
    "input_size",
    "load_image",
    "parse_device",
    "run_outputs",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# --- device and precision ---------------------------------------------------------------------------
def default_device() -> torch.device:
    """CUDA if present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(name: str | None) -> torch.device | None:
    """The device of a ``--device`` option (None stays None); ``SSALError`` for a bad name or a missing device."""
    if name is None:
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SSALError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SSALError(f"--device {name}: no CUDA device on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SSALError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SSALError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SSALError(f"--device {name}: ssal runs on cpu, cuda or mps")
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a Lightning precision string on ``device`` (``auto`` resolved for this machine).

    bf16 precisions autocast to bfloat16; ``16-mixed`` to float16 on CUDA only (as in training: Lightning refuses
    fp16 on the CPU); 32-bit runs without autocast.
    """
    precision = resolve_precision(precision, "cuda" if device.type == "cuda" else "cpu")
    if precision in ("bf16-mixed", "bf16-true"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every module's previous mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def run_outputs(info: RunInfo, x: torch.Tensor) -> SSALOutput:
    """The outputs of a trained run's model (f and every branch) on ``x``, in eval mode; its modes come back."""
    with eval_mode(info.model):
        return info.model(x.to(next(info.model.parameters()).device), with_branches=True)


# --- a trained run's classes and inputs -------------------------------------------------------------
def class_names(info: RunInfo) -> list[str]:
    """The run's class names, or the class indices as text when the data set has none."""
    return list(info.class_names) if info.class_names else [str(c) for c in range(info.num_classes)]


def input_size(info: RunInfo) -> tuple[int, int, int]:
    """(C, H, W) the run's model was trained on: its data set's image size, else the model's registered size."""
    return dataset_spec(info.config.data.name).input_size or tuple(info.model.input_size)


def image_transform(info: RunInfo) -> Callable[[Any], torch.Tensor]:
    """PIL image -> float tensor (3, H, W) in [0, 1], resized as the run's data set expects.

    Small-image data sets (CIFAR, digits, Tiny ImageNet): resize to the data set's image size.
    ImageNet-like folder data (or inputs of 224 pixels and more): resize the short side to 256/224 of the input
    size (or what the model's weights say, ``ssal.build.input_geometry``), then center-crop (the paper's evaluation
    transform, Resize 256 + CenterCrop 224).
    """
    from torchvision.transforms import functional as TF  # torchvision is slow to import: only when images are read

    _, h, w = input_size(info)
    folder = not dataset_spec(info.config.data.name).in_memory
    crop = folder or min(h, w) >= 224
    resize = input_geometry(info.config)[1] if folder and getattr(info.config, "model", None) is not None else None
    resize = resize or round(min(h, w) * 256 / 224)

    def transform(img: Any) -> torch.Tensor:
        img = to_rgb(img)
        if crop:  # short side to 256/224 of the input size (or the weights' crop fraction), then the central crop
            return TF.to_tensor(TF.center_crop(TF.resize(img, resize), [h, w]))
        return TF.to_tensor(TF.resize(img, [h, w]))

    return transform


def load_image(path: str | os.PathLike, transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Read one PNG/JPEG file and apply ``transform``; an unreadable file raises ``SSALError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise SSALError(f"{path}: no such image file")
    return transform(open_image(path))


def expand_image_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files stay as given; folders expand to their PNG/JPEG files (sorted, not recursive)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("%s: folder has no .png/.jpg/.jpeg files", p)
            out += found
        else:
            out.append(p)
    return out
