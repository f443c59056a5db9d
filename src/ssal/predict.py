"""Interpretable predictions of a trained run (paper Sec. 4.5): +JP and +TR top-K, and for every branch g_i
the predicted group, its probability and the names of the classes in it ("labels within predicted SSAL groups").

Images are read with Pillow and resized the way the run's data set expects (``image_transform``), giving
pixels in [0, 1]; the model normalises inside.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import SSALError
from .prediction import joint_probability, main_probability
from .runs import RunInfo

__all__ = [
    "DATASET_INPUT_SIZES",
    "IMAGE_SUFFIXES",
    "BranchPrediction",
    "ClassScore",
    "ImagePrediction",
    "expand_image_paths",
    "format_prediction",
    "image_transform",
    "input_size",
    "load_image",
    "predict_images",
    "predict_tensor",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ClassScore:
    """One entry of a top-K list."""

    index: int
    name: str
    prob: float


@dataclass
class BranchPrediction:
    """What one auxiliary classifier g_i predicts: a group, its probability and the group's member classes."""

    name: str
    group: int
    prob: float
    members: list[str]


@dataclass
class ImagePrediction:
    """Everything ``ssal predict`` reports for one image."""

    file: str
    jp: list[ClassScore]
    tr: list[ClassScore]
    branches: list[BranchPrediction] = field(default_factory=list)

    @property
    def disagree(self) -> bool:
        """True when the joint prediction (+JP) and the main classifier (+TR) pick different top-1 classes."""
        return self.jp[0].index != self.tr[0].index

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the ``disagree`` flag)."""
        return {**asdict(self), "disagree": self.disagree}


#: Image size (C, H, W) of the built-in small-image data sets (what a model trained on them sees).
DATASET_INPUT_SIZES = {
    "cifar100": (3, 32, 32),
    "cifar100_mini": (3, 32, 32),
    "digits": (3, 16, 16),
    "tinyimagenet": (3, 64, 64),
}


# --- images -----------------------------------------------------------------------------------------
def input_size(info: RunInfo) -> tuple[int, int, int]:
    """(C, H, W) the run's model was trained on: its data set's native size, else the model's registered size."""
    return DATASET_INPUT_SIZES.get(info.config.data.name, tuple(info.model.input_size))


def image_transform(info: RunInfo) -> Callable[[Any], torch.Tensor]:
    """PIL image -> float tensor (3, H, W) in [0, 1], resized as the run's data set expects.

    Small-image data sets (CIFAR, digits, Tiny ImageNet): resize to the data set's native size.
    ImageNet-like folder data (or inputs of 224 pixels and more): resize the short side to 256/224 of the input
    size (or what the model's weights say, ``ssal.build.input_geometry``), then center-crop (the paper's evaluation
    transform, Resize 256 + CenterCrop 224).
    """
    from torchvision.transforms import functional as TF

    from .build import input_geometry

    _, h, w = input_size(info)
    crop = info.config.data.name == "folder" or min(h, w) >= 224
    folder_model = info.config.data.name == "folder" and getattr(info.config, "model", None) is not None
    resize = input_geometry(info.config)[1] if folder_model else None
    resize = resize or round(min(h, w) * 256 / 224)

    def transform(img: Any) -> torch.Tensor:
        img = img.convert("RGB")
        if crop:  # short side to 256/224 of the input size (or the weights' crop fraction), then the central crop
            return TF.to_tensor(TF.center_crop(TF.resize(img, resize), [h, w]))
        return TF.to_tensor(TF.resize(img, [h, w]))

    return transform


def load_image(path: str | os.PathLike, transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Read one PNG/JPEG file and apply ``transform``; an unreadable file raises ``SSALError`` naming it."""
    from .data.folder import open_image

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


# --- predictions ------------------------------------------------------------------------------------
def _names(info: RunInfo) -> list[str]:
    return list(info.class_names) if info.class_names else [str(c) for c in range(info.num_classes)]


def _topk(probs: torch.Tensor, k: int, names: Sequence[str]) -> list[ClassScore]:
    p, idx = probs.topk(min(k, probs.numel()))
    return [ClassScore(int(i), names[int(i)], float(v)) for v, i in zip(p, idx, strict=True)]


@torch.no_grad()
def predict_tensor(info: RunInfo, x: torch.Tensor, top: int = 5) -> list[dict[str, Any]]:
    """Predictions for a batch ``x`` (B, 3, H, W) in [0, 1]: per image the +JP/+TR top-K and each branch's group.

    Returns plain dicts with keys ``jp``, ``tr`` (lists of ``ClassScore``) and ``branches``. The model's
    training mode is left as it was.
    """
    if top < 1:
        raise SSALError(f"--top must be at least 1, got {top}")
    model, names = info.model, _names(info)
    was_training = model.training
    try:
        out = model.eval()(x.to(next(model.parameters()).device), with_branches=True)
    finally:
        model.train(was_training)
    tr = main_probability(out).cpu()
    jp = joint_probability(out, info.gammas, info.eta).cpu() if out.aux else tr
    rows = []
    for b in range(x.shape[0]):
        branches = []
        for name, g, logits in zip(model.branch_names, info.groupings, out.aux, strict=True):
            p = logits[b].float().softmax(-1)
            grp = int(p.argmax())
            branches.append(BranchPrediction(name, grp, float(p[grp]), [names[c] for c in g.groups()[grp]]))
        rows.append({"jp": _topk(jp[b], top, names), "tr": _topk(tr[b], top, names), "branches": branches})
    return rows


def predict_images(
    info: RunInfo, paths: Sequence[str | os.PathLike], top: int = 5, batch_size: int = 64
) -> tuple[list[ImagePrediction], list[tuple[str, str]]]:
    """Predict every readable image; returns the predictions and ``(file, error message)`` for the rest."""
    transform = image_transform(info)
    preds: list[ImagePrediction] = []
    errors: list[tuple[str, str]] = []
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        if batch:
            rows = predict_tensor(info, torch.stack([t for _, t in batch]), top)
            preds.extend(ImagePrediction(f, **r) for (f, _), r in zip(batch, rows, strict=True))
            batch.clear()

    for p in paths:
        try:
            batch.append((str(p), load_image(p, transform)))
        except SSALError as e:
            errors.append((str(p), str(e)))
        if len(batch) >= batch_size:
            flush()
    flush()
    return preds, errors


def format_prediction(p: ImagePrediction) -> str:
    """The human-readable block ``ssal predict`` prints for one image."""

    def scores(lst: list[ClassScore]) -> str:
        return "  ".join(f"{i + 1}. {s.name} {s.prob:.3f}" for i, s in enumerate(lst))

    lines = [p.file, f"  +JP  {scores(p.jp)}", f"  +TR  {scores(p.tr)}"]
    for b in p.branches:
        lines.append(f"  {b.name}: group {b.group} (p={b.prob:.3f}): {', '.join(b.members)}")
    if p.disagree:
        lines.append(f"  ! +JP ({p.jp[0].name}) and +TR ({p.tr[0].name}) disagree")
    return "\n".join(lines)
