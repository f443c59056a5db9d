"""Interpretable predictions of a trained run (paper Sec. 4.5): +JP and +TR top-K, and for every branch g_i
the predicted group, its probability and the names of the classes in it ("labels within predicted SSAL groups").

Images are read by ``ssal.runtime`` (pixels in [0, 1], sized as the run's data set expects); the model normalises
inside.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .errors import SSALError
from .prediction import class_log_probs
from .runs import RunInfo
from .runtime import class_names, image_transform, load_image, run_outputs

__all__ = [
    "BranchPrediction",
    "ClassScore",
    "ImagePrediction",
    "format_prediction",
    "predict_images",
    "predict_tensor",
]

log = logging.getLogger(__name__)


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


# --- predictions ------------------------------------------------------------------------------------
def _topk(probs: torch.Tensor, k: int, names: Sequence[str]) -> list[ClassScore]:
    p, idx = probs.topk(min(k, probs.numel()))
    return [ClassScore(int(i), names[int(i)], float(v)) for v, i in zip(p, idx, strict=True)]


@torch.no_grad()
def predict_tensor(
    info: RunInfo, x: torch.Tensor, top: int = 5, temperature: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Predictions for a batch ``x`` (B, 3, H, W) in [0, 1]: per image the +JP/+TR top-K and each branch's group.

    Returns plain dicts with keys ``jp``, ``tr`` (lists of ``ClassScore``) and ``branches``. ``temperature``
    ({"tr": T, "jp": T}, from ``ssal.evaluation.load_temperatures``) calibrates the probabilities (+TS). The
    model's training mode is left as it was.
    """
    if top < 1:
        raise SSALError(f"--top must be at least 1, got {top}")
    model, names = info.model, class_names(info)
    out = run_outputs(info, x)
    t = temperature or {}
    tr = class_log_probs(out, info.gammas, info.eta, "tr", t.get("tr", 1.0)).exp().cpu()
    jp = class_log_probs(out, info.gammas, info.eta, "jp", t.get("jp", 1.0)).exp().cpu() if out.aux else tr
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
    info: RunInfo,
    paths: Sequence[str | os.PathLike],
    top: int = 5,
    batch_size: int = 64,
    temperature: dict[str, float] | None = None,
) -> tuple[list[ImagePrediction], list[tuple[str, str]]]:
    """Predict every readable image; returns the predictions and ``(file, error message)`` for the rest."""
    transform = image_transform(info)
    preds: list[ImagePrediction] = []
    errors: list[tuple[str, str]] = []
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        if batch:
            rows = predict_tensor(info, torch.stack([t for _, t in batch]), top, temperature)
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

    lines = [p.file, *[f"  +JP  {scores(p.jp)}"] * bool(p.branches), f"  +TR  {scores(p.tr)}"]  # a baseline: f
    for b in p.branches:
        lines.append(f"  {b.name}: group {b.group} (p={b.prob:.3f}): {', '.join(b.members)}")
    if p.disagree:
        lines.append(f"  ! +JP ({p.jp[0].name}) and +TR ({p.tr[0].name}) disagree")
    return "\n".join(lines)
