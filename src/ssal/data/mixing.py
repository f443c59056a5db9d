"""Batch-level mixing (mixup, cutmix, as in timm) and the per-sample augmentations that go with it (RandAugment /
TrivialAugmentWide, random erasing), for both data paths.

ImageFolder data uses torchvision's ``transforms.v2`` (``MixUp``/``CutMix`` in the DataLoader's collate function,
``RandAugment``/``TrivialAugmentWide``/``RandomErasing`` in the per-image transform). The in-memory path mixes the
batches of ``DeviceLoader`` here: its parameters (whether a batch mixes, mixup or cutmix, lambda, the box) come from
a generator seeded by (seed, epoch, rank), so an epoch is the same whatever ran before it (exact resume), which the
global RNG that torchvision's transforms draw from cannot give.

Mixed targets are soft class targets (B, C): ``lam * onehot(y) + (1 - lam) * onehot(y.roll(1))``, the pairing of
torchvision's ``MixUp``/``CutMix``. A branch's target is that mixture summed over each group (``ssal.loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SSALError

__all__ = [
    "AUTO_AUGMENTS",
    "MixCollate",
    "MixPlan",
    "MixSettings",
    "auto_augment_transform",
    "cutmix_box",
    "erase_batch",
    "mix_batch",
]

#: ``data.auto_augment``: none | randaugment (torchvision's defaults: 2 ops, magnitude 9) | trivialaugment.
AUTO_AUGMENTS: tuple[str, ...] = ("none", "randaugment", "trivialaugment")


@dataclass(frozen=True)
class MixSettings:
    """mixup / cutmix alphas (0: off), the probability that a batch mixes and that of cutmix when both are on."""

    mixup: float = 0.0
    cutmix: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def active(self) -> bool:
        """Whether any batch can mix."""
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0

    def check(self) -> MixSettings:
        """SSALError for alphas < 0 or probabilities outside [0, 1]."""
        for name, v in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if not (math.isfinite(v) and v >= 0):
                raise SSALError(f"{name} alpha must be a finite number >= 0 (0: off), got {v}")
        for name, v in (("mix_prob", self.prob), ("mix_switch_prob", self.switch_prob)):
            if not 0.0 <= v <= 1.0:
                raise SSALError(f"{name} must be in [0, 1], got {v}")
        return self


@dataclass(frozen=True)
class MixPlan:
    """One epoch's mixing parameters, one entry per batch: mixes or not, cutmix (else mixup), lambda, box centre."""

    apply: Tensor  # (nb,) bool
    cutmix: Tensor  # (nb,) bool
    lam: Tensor  # (nb,) float64
    centre: Tensor  # (nb, 2) float64 in [0, 1): (cy, cx)

    @staticmethod
    def draw(s: MixSettings, n_batches: int, seed: int) -> MixPlan:
        """The seeded parameters of ``n_batches`` batches (timm's rules: ``switch_prob`` picks cutmix when both
        alphas are on; lambda ~ Beta(alpha, alpha) of the mode used)."""
        rng = np.random.default_rng(seed)
        apply = rng.random(n_batches) < s.prob
        if s.mixup > 0 and s.cutmix > 0:
            cut = rng.random(n_batches) < s.switch_prob
        else:
            cut = np.full(n_batches, s.cutmix > 0)
        lam_mix = rng.beta(s.mixup, s.mixup, n_batches) if s.mixup > 0 else np.ones(n_batches)
        lam_cut = rng.beta(s.cutmix, s.cutmix, n_batches) if s.cutmix > 0 else np.ones(n_batches)
        centre = rng.random((n_batches, 2))
        lam = np.where(cut, lam_cut, lam_mix)
        return MixPlan(*(torch.from_numpy(a) for a in (apply & s.active, cut, lam, centre)))


def cutmix_box(h: int, w: int, lam: float, cy: float, cx: float) -> tuple[int, int, int, int, float]:
    """timm's ``rand_bbox``: a box of sides ``sqrt(1 - lam)`` times the image's around (cy*h, cx*w), clipped to the
    image; returns (y0, y1, x0, x1) and lambda corrected to the pasted area."""
    r = math.sqrt(1.0 - lam)
    ch, cw = int(h * r), int(w * r)
    y, x = int(cy * h), int(cx * w)
    y0, y1 = min(max(y - ch // 2, 0), h), min(max(y + ch // 2, 0), h)
    x0, x1 = min(max(x - cw // 2, 0), w), min(max(x + cw // 2, 0), w)
    return y0, y1, x0, x1, 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


def mix_batch(
    x: Tensor, y: Tensor, num_classes: int, lam: float, cutmix: bool = False, centre: tuple[float, float] = (0.5, 0.5)
) -> tuple[Tensor, Tensor]:
    """Mix float images (B, C, H, W) in place with the batch rolled by one; return them and the soft targets (B, K).

    mixup: ``lam * x + (1 - lam) * x.roll(1)``; cutmix: the rolled batch's box pasted in (lambda = the kept area).
    """
    onehot = F.one_hot(y, num_classes).float()
    other = x.roll(1, 0)
    if cutmix:
        y0, y1, x0, x1, lam = cutmix_box(x.shape[-2], x.shape[-1], lam, *centre)
        x[:, :, y0:y1, x0:x1] = other[:, :, y0:y1, x0:x1]
    else:
        x.mul_(lam).add_(other, alpha=1.0 - lam)
    return x, onehot.roll(1, 0).mul_(1.0 - lam).add_(onehot, alpha=lam)


def erase_batch(x: Tensor, p: float, gen: torch.Generator, scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> Tensor:
    """Random erasing per sample, batched: with probability ``p`` a box of ``scale`` of the area and aspect ratio in
    ``ratio`` (log-uniform; torchvision's ``RandomErasing`` parameters, one draw per sample: a box that does not fit
    is clipped) is set to 0, in place on float images (B, C, H, W). Hand-written because torchvision's erases the
    same box in the whole batch."""
    b, _, h, w = x.shape
    u = torch.rand(b, 5, generator=gen).to(x.device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    eh = (area * logr.exp()).sqrt().round().clamp(1, h)
    ew = (area / logr.exp()).sqrt().round().clamp(1, w)
    top = ((h - eh + 1) * u[:, 2]).floor()
    left = ((w - ew + 1) * u[:, 3]).floor()
    on = u[:, 4] < p
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None]
    return x.masked_fill_(mask[:, None], 0.0)


def auto_augment_transform(name: str) -> Any:
    """torchvision's ``transforms.v2`` policy of ``data.auto_augment`` (None for ``none``)."""
    from torchvision.transforms import v2

    if name not in AUTO_AUGMENTS:
        raise SSALError(f"unknown auto_augment {name!r}; choose one of {', '.join(AUTO_AUGMENTS)}")
    return {"none": None, "randaugment": v2.RandAugment(), "trivialaugment": v2.TrivialAugmentWide()}[name]


class MixCollate:
    """The DataLoader collate function of ImageFolder training data with mixup / cutmix (torchvision ``v2.MixUp``,
    ``v2.CutMix``, ``v2.RandomChoice``): every batch's targets are soft (B, C), one-hot when it does not mix."""

    def __init__(self, s: MixSettings, num_classes: int) -> None:
        from torchvision.transforms import v2

        self.s, self.num_classes = s.check(), int(num_classes)
        both = s.mixup > 0 and s.cutmix > 0
        used = []  # (transform, weight): torchvision's Beta needs an alpha > 0, so only the modes that are on
        if s.mixup > 0:
            used.append((v2.MixUp(alpha=s.mixup, num_classes=self.num_classes), 1.0 - s.switch_prob if both else 1.0))
        if s.cutmix > 0:
            used.append((v2.CutMix(alpha=s.cutmix, num_classes=self.num_classes), s.switch_prob if both else 1.0))
        self.mix = v2.RandomChoice([t for t, _ in used], p=[p for _, p in used]) if used else None

    def __call__(self, batch: list[Any]) -> tuple[Tensor, Tensor]:
        x, y = torch.utils.data.default_collate(batch)
        if self.mix is None or float(torch.rand(())) >= self.s.prob:
            return x, F.one_hot(y, self.num_classes).float()
        return self.mix(x, y)
