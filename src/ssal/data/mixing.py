"""Batch-level mixing (mixup, cutmix, with timm's switch between them) and the per-sample augmentations that go with
it (RandAugment / TrivialAugmentWide, random erasing), for both data paths.

Mixing is torchvision's ``transforms.v2`` (``MixUp``/``CutMix`` under ``RandomChoice``), in ``BatchMixer``: the
collate function of ImageFolder data calls it on the global RNG (seeded per worker); the in-memory ``DeviceLoader``
calls it with one seed per batch, drawn from (seed, epoch, rank), so an epoch is the same whatever ran before it
(exact resume).

Mixed targets are soft class targets (B, C): ``lam * onehot(y) + (1 - lam) * onehot(y.roll(1))``, torchvision's
pairing. A branch's target is that mixture summed over each group (``ssal.loss``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SSALError

__all__ = [
    "AUTO_AUGMENTS",
    "BatchAutoAugment",
    "BatchMixer",
    "MixCollate",
    "MixSettings",
    "auto_augment_transform",
    "erase_batch",
    "seeded_cpu_rng",
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


class BatchAutoAugment:
    """torchvision's ``RandAugment`` / ``TrivialAugmentWide`` on a batch of uint8 images (B, C, H, W) with one draw
    per image, as a call per image would make, but each drawn (operation, magnitude) applied once to all the images
    that drew it: RandAugment makes at most 2 x 14 x 2 calls per batch (ops x operations x signs) instead of one per
    image; TrivialAugmentWide, whose magnitude is drawn per image too, about half as many as images at batch 512.
    The operations are torchvision's own; the draws come from the global CPU generator (the caller seeds it)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.ops = list(policy._AUGMENTATION_SPACE.items())  # name -> (magnitudes(bins, h, w), signed)
        self.slots = getattr(policy, "num_ops", 1)  # RandAugment: num_ops per image; TrivialAugmentWide: one
        self.fixed_bin = getattr(policy, "magnitude", None)  # RandAugment's fixed magnitude; TrivialAugment draws one

    def draws(self, n: int, h: int, w: int) -> list[list[tuple[str, float]]]:
        """Per operation slot, each image's (operation, signed magnitude), with the policy's probabilities."""
        bins = self.policy.num_magnitude_bins
        table = [(name, fn(bins, h, w), signed) for name, (fn, signed) in self.ops]  # magnitudes None: no magnitude
        out = []
        for _ in range(self.slots):
            op = torch.randint(len(table), (n,)).tolist()
            level = torch.randint(bins, (n,)).tolist() if self.fixed_bin is None else [self.fixed_bin] * n
            negative = (torch.rand(n) <= 0.5).tolist()
            slot = []
            for i in range(n):
                name, mags, signed = table[op[i]]
                m = 0.0 if mags is None else float(mags[level[i]])
                slot.append((name, -m if signed and negative[i] else m))
            out.append(slot)
        return out

    def __call__(self, x: Tensor) -> Tensor:
        p = self.policy
        for slot in self.draws(x.shape[0], x.shape[-2], x.shape[-1]):
            groups: dict[tuple[str, float], list[int]] = {}
            for i, key in enumerate(slot):
                groups.setdefault(key, []).append(i)
            for (name, magnitude), idx in groups.items():
                if name == "Identity":
                    continue
                rows = torch.tensor(idx, device=x.device)
                x[rows] = p._apply_image_or_video_transform(x[rows], name, magnitude, p.interpolation, p._fill)
        return x


def auto_augment_transform(name: str) -> Any:
    """torchvision's ``transforms.v2`` policy of ``data.auto_augment`` (None for ``none``)."""
    from torchvision.transforms import v2

    if name not in AUTO_AUGMENTS:
        raise SSALError(f"unknown auto_augment {name!r}; choose one of {', '.join(AUTO_AUGMENTS)}")
    return {"none": None, "randaugment": v2.RandAugment(), "trivialaugment": v2.TrivialAugmentWide()}[name]


@contextlib.contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """The global CPU generator seeded with ``seed`` inside the block and restored after it; the GPUs' generators
    (dropout, stochastic depth) are left alone, which ``torch.manual_seed`` would reseed."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class BatchMixer:
    """mixup / cutmix of a batch of float images (B, C, H, W) with integer labels (B,), as torchvision's ``v2.MixUp``
    and ``v2.CutMix``: with probability ``prob`` the batch mixes (cutmix with probability ``switch_prob`` when both
    alphas are on); returns the images and soft targets (B, C), one-hot when the batch does not mix.

    ``seed``: draw from a generator seeded by it (the global CPU generator is left as it was); else from the global one.
    """

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

    def __call__(self, x: Tensor, y: Tensor, seed: int | None = None) -> tuple[Tensor, Tensor]:
        # torchvision draws lambda, the mode and the box on the CPU
        with contextlib.nullcontext() if seed is None else seeded_cpu_rng(seed):
            if self.mix is None or float(torch.rand(())) >= self.s.prob:
                return x, F.one_hot(y, self.num_classes).float()
            return self.mix(x, y)


class MixCollate:
    """The DataLoader collate function of ImageFolder training data with mixup / cutmix (``BatchMixer``): every
    batch's targets are soft (B, C), one-hot when it does not mix."""

    def __init__(self, s: MixSettings, num_classes: int) -> None:
        self.mixer = BatchMixer(s, num_classes)

    def __call__(self, batch: list[Any]) -> tuple[Tensor, Tensor]:
        return self.mixer(*torch.utils.data.default_collate(batch))
