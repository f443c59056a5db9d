"""The fast data path for small images (airbench style): the uint8 data set lives on the device, each batch is an
index into it, and augmentation (random shift with reflect padding, horizontal flip) is two batched copies.

Optional, off by default: RandAugment / TrivialAugmentWide per image (torchvision ``transforms.v2`` on the device),
random erasing per image and mixup / cutmix per batch (``ssal.data.mixing``), all seeded per epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import SSALError
from .arrays import ImageArrays
from .mixing import (
    AUTO_AUGMENTS,
    BatchAutoAugment,
    BatchMixer,
    MixSettings,
    auto_augment_transform,
    erase_batch,
    seeded_cpu_rng,
)
from .specs import AUGMENTATIONS

__all__ = ["DeviceLoader", "augment_batch", "gather_augmented"]


def _reflect(idx: Tensor, n: int) -> Tensor:
    """Map indices in [-(n-1), 2(n-1)] into [0, n) by reflection about the border pixels (like reflect padding)."""
    idx = idx.abs()
    return torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)


def gather_augmented(
    data: Tensor,
    idx: Tensor,
    shifts: Tensor | None = None,
    flips: Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """Batch ``data[idx]`` of a contiguous (N, C, H, W) tensor, each image flipped (if ``flips``) then shifted.

    ``shifts`` (B, 2) holds (dy, dx): output pixel (i, j) reads source pixel (i + dy, j + dx), reflected at the
    border, i.e. reflect padding followed by a crop. Two batched copies, no per-sample loop: whole image rows are
    picked with one ``index_select`` (batch selection + vertical shift), then one ``gather`` along the width does
    the horizontal shift and the flip (a ``torch.where`` on the column index), writing straight into
    ``memory_format`` (channels_last this way costs a third of a later relayout).
    """
    if shifts is None and flips is None:
        return data.index_select(0, idx).contiguous(memory_format=memory_format)
    n, c, h, w = data.shape
    b = idx.numel()
    rows = torch.arange(h, device=data.device).expand(b, h)  # (B, H) source row of each output row
    cols = torch.arange(w, device=data.device).expand(b, w)  # (B, W) source column of each output column
    if shifts is not None:
        rows = _reflect(rows + shifts[:, :1], h)
        cols = _reflect(cols + shifts[:, 1:], w)
    if flips is not None:
        cols = torch.where(flips[:, None], w - 1 - cols, cols)
    planes = idx[:, None, None] * c + torch.arange(c, device=data.device)[None, :, None]  # (B, C, 1)
    out = data.view(n * c * h, w).index_select(0, (planes * h + rows[:, None, :]).flatten()).view(b, c, h, w)
    result = torch.empty((b, c, h, w), dtype=data.dtype, device=data.device, memory_format=memory_format)
    return torch.gather(out, 3, cols[:, None, None, :].expand(b, c, h, w), out=result)


def augment_batch(x: Tensor, shifts: Tensor | None = None, flips: Tensor | None = None) -> Tensor:
    """Flip and shift a (B, C, H, W) batch with per-sample ``shifts`` (B, 2) and ``flips`` (B,) (see above)."""
    return gather_augmented(x.contiguous(), torch.arange(x.shape[0], device=x.device), shifts, flips)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA6B + 1) % (2**63)


class DeviceLoader:
    """Iterates ``(x, y)`` batches of an ``ImageArrays`` kept on ``device``: x float32 (B, 3, H, W) in [0, 1]
    (the model normalises), y int64 (B,); in training with ``mix`` active, y is soft class targets float32 (B, C)
    (one-hot in a batch that does not mix).

    Training: every epoch draws one seeded permutation (identical on every rank) plus per-sample shifts/flips;
    rank r takes positions r::world_size of it, so shards are disjoint and equally long (the epoch is cut to a
    multiple of ``world_size``). Evaluation: fixed order, no augmentation, every sample exactly once over all
    ranks; with unequal shards the batches are balanced so all ranks yield the same number of batches.

    Training only: ``auto_augment`` (``randaugment`` | ``trivialaugment``, torchvision's v2 policy applied to each
    uint8 image, one call per image: slower than the rest of the path), ``random_erasing`` (probability per image)
    and ``mix`` (mixup / cutmix per batch). Their randomness is drawn from (seed, epoch, rank), as the permutation.
    """

    def __init__(
        self,
        data: ImageArrays,
        batch_size: int,
        *,
        train: bool,
        augment: str = "cifar",
        max_shift: int = 4,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        channels_last: bool = False,
        mix: MixSettings | None = None,
        auto_augment: str = "none",
        random_erasing: float = 0.0,
    ) -> None:
        _check_options(data, batch_size, augment, max_shift, rank, world_size)
        if auto_augment not in AUTO_AUGMENTS:
            raise SSALError(f"unknown auto_augment {auto_augment!r}; choose one of {', '.join(AUTO_AUGMENTS)}")
        if not 0.0 <= float(random_erasing) <= 1.0:
            raise SSALError(f"random_erasing is a probability in [0, 1], got {random_erasing}")
        self.mix = (mix or MixSettings()).check()
        self.auto_augment, self.random_erasing = auto_augment, float(random_erasing)
        policy = auto_augment_transform(auto_augment) if train else None
        self._policy = None if policy is None else BatchAutoAugment(policy)
        self._mixer = BatchMixer(self.mix, data.num_classes) if train and self.mix.active else None
        self.data, self.batch_size, self.train = data, int(batch_size), bool(train)
        self.augment, self.max_shift, self.seed = augment, int(max_shift), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = bool(channels_last)
        self._layout = torch.channels_last if self.channels_last else torch.contiguous_format
        self.device = torch.device(device)
        self._images = data.images.to(self.device).contiguous()  # (N, C, H, W) uint8, stored once
        self._labels = data.labels.to(self.device)
        self.epoch, self._start_batch = 0, 0

    # ------------------------------------------------------------------ sizes
    @property
    def class_names(self) -> list[str] | None:
        return self.data.class_names

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def _cut(self) -> bool:
        """Whether the epoch is cut to a multiple of world_size (equal shards, so equal batch counts)."""
        return self.world_size > 1 and (self.train or self.drop_last)

    def _shard_len(self, rank: int) -> int:
        n = len(self.data) - (len(self.data) % self.world_size if self._cut() else 0)
        return len(range(rank, n, self.world_size))

    def _num_batches(self, m: int) -> int:
        if self.drop_last:
            return m // self.batch_size
        return math.ceil(self._shard_len(0) / self.batch_size)  # rank 0 has the longest shard

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same on every rank)."""
        return self._num_batches(self._shard_len(self.rank))

    @property
    def num_samples(self) -> int:
        """Samples per epoch for this rank."""
        m = self._shard_len(self.rank)
        return len(self) * self.batch_size if self.drop_last else m

    # ------------------------------------------------------------------ iteration
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use ``epoch``'s permutation for the next iteration, optionally resuming at batch ``start_batch``."""
        if epoch < 0 or start_batch < 0:
            raise SSALError(f"set_epoch: epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self.epoch, self._start_batch = int(epoch), int(start_batch)

    def _epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """This rank's sample order and per-sample (shift, flip) for ``epoch``, drawn on CPU (device-independent)."""
        n = len(self.data)
        if not self.train:
            order, shifts, flips = torch.arange(n), None, None
        else:
            gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            order = torch.randperm(n, generator=gen)
            p = self.max_shift
            shifts = torch.randint(-p, p + 1, (n, 2), generator=gen) if self.augment != "none" and p > 0 else None
            flips = torch.rand(n, generator=gen) < 0.5 if self.augment == "cifar" else None
        keep = slice(self.rank, n - (n % self.world_size if self._cut() else 0), self.world_size)
        return order[keep], None if shifts is None else shifts[keep], None if flips is None else flips[keep]

    def _bounds(self, m: int) -> list[tuple[int, int]]:
        """Batch (start, end) positions in a shard of length ``m``; balanced when shards differ in length."""
        nb, b = self._num_batches(m), self.batch_size
        if self.drop_last or self._shard_len(0) == self._shard_len(self.world_size - 1):
            return [(i * b, min((i + 1) * b, m)) for i in range(nb)]
        edges = [m * i // nb for i in range(nb + 1)]  # eval, unequal shards: nb near-equal batches on every rank
        return list(zip(edges[:-1], edges[1:], strict=True))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of the current epoch. The epoch is read when the first batch is taken, not when the iterator
        is made: an iterator made early and never used (Lightning makes one before restoring a checkpoint) neither
        fixes the epoch too soon nor uses one up."""
        epoch, start = self.epoch, self._start_batch
        self.epoch, self._start_batch = epoch + 1, 0  # forgetting set_epoch still gives a fresh permutation
        order, shifts, flips = (None if t is None else t.to(self.device) for t in self._epoch_plan(epoch))
        bounds = self._bounds(order.numel())
        extra = self._extra_seeds(epoch, len(bounds)) if self.train else None
        yield from self._batches(order, shifts, flips, bounds, extra, start)

    def _extra_seeds(self, epoch: int, n_batches: int) -> Tensor:
        """One seed per batch for auto_augment, random erasing and mixing, from their own generator: turning them on
        leaves the permutation, shifts and flips of the epoch as they were."""
        seed = [self.seed, epoch, self.rank, 0x5EED, 1]
        return torch.from_numpy(np.random.default_rng(seed).integers(0, 2**62, n_batches))

    def _batches(self, order, shifts, flips, bounds, extra, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(start, len(bounds)):
            lo, hi = bounds[i]
            idx = order[lo:hi]
            sh, fl = None if shifts is None else shifts[lo:hi], None if flips is None else flips[lo:hi]
            x = gather_augmented(self._images, idx, sh, fl, self._layout)  # uint8, already in the final layout
            if extra is None:
                yield x.float().div_(255.0), self._labels[idx]  # float32 in [0, 1], same memory format
                continue
            yield self._train_extras(x, self._labels[idx], int(extra[i]))

    def _train_extras(self, x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """auto_augment (uint8), then [0, 1] floats, random erasing, and mixing (soft targets when it is on)."""
        if self._policy is not None:
            with seeded_cpu_rng(seed):  # torchvision's policies draw from the global CPU generator
                x = self._policy(x).contiguous(memory_format=self._layout)
        x = x.float().div_(255.0)
        if self.random_erasing > 0:
            erase_batch(x, self.random_erasing, torch.Generator().manual_seed(seed + 1))
        return (x, y) if self._mixer is None else self._mixer(x, y, seed + 2)


def _check_options(data, batch_size, augment, max_shift, rank, world_size) -> None:
    """SSALError for any option DeviceLoader cannot honour."""
    if not isinstance(data, ImageArrays):
        raise SSALError(f"DeviceLoader needs ImageArrays, got {type(data).__name__}")
    if int(batch_size) < 1:
        raise SSALError(f"batch_size must be >= 1, got {batch_size}")
    if augment not in AUGMENTATIONS:
        raise SSALError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    _, h, w = data.image_size
    if augment != "none" and not 0 <= int(max_shift) < min(h, w):
        raise SSALError(f"max_shift must be in [0, {min(h, w) - 1}] for {h}x{w} images, got {max_shift}")
    if not 0 <= int(rank) < int(world_size):
        raise SSALError(f"rank must be in [0, world_size={world_size}), got {rank}")
