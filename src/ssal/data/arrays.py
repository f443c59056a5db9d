"""In-memory image data sets: ``ImageArrays`` (uint8 images + int labels), validation and a stratified split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..errors import SSALError

__all__ = ["ImageArrays", "per_class_indices", "per_class_subset", "split_train_val", "stratified_split"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ImageArrays:
    """A whole image data set in memory: ``images`` uint8 (N, 3, H, W) and ``labels`` int64 (N,).

    ``class_names`` (one per class) fixes ``num_classes``; ``coarse_labels`` / ``fine_to_coarse`` carry a
    superclass level where the data set has one (CIFAR-100's 20 superclasses).
    """

    images: Tensor
    labels: Tensor
    class_names: list[str] | None = None
    coarse_labels: Tensor | None = None
    fine_to_coarse: list[int] | None = None
    name: str = ""
    coarse_class_names: list[str] | None = None

    def __post_init__(self) -> None:
        check_images_labels(self.images, self.labels, self.num_classes, self.name or "data set")
        if self.coarse_labels is not None and tuple(self.coarse_labels.shape) != tuple(self.labels.shape):
            raise SSALError(
                f"{self.name}: coarse_labels has shape {tuple(self.coarse_labels.shape)}, "
                f"expected {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes: ``len(class_names)`` if known, else ``max(label) + 1``."""
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels.numel() else 0

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, idx: Tensor | Sequence[int]) -> ImageArrays:
        """The samples at ``idx`` (indices or a boolean mask), with the same class names."""
        idx = torch.as_tensor(idx, device=self.labels.device)
        coarse = self.coarse_labels[idx] if self.coarse_labels is not None else None
        return replace(self, images=self.images[idx], labels=self.labels[idx], coarse_labels=coarse)


def check_images_labels(images: Tensor, labels: Tensor, num_classes: int | None, what: str) -> None:
    """Raise SSALError unless images are uint8 (N, 3, H, W), labels int64 (N,) and within [0, num_classes)."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        desc = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise SSALError(f"{what}: images must be a uint8 tensor of shape (N, 3, H, W), got {desc}")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        desc = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise SSALError(f"{what}: labels must be an int64 tensor of shape (N,), got {desc}")
    if labels.shape[0] != images.shape[0]:
        raise SSALError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise SSALError(
            f"{what}: labels out of range [0, {num_classes}): min {int(labels.min())}, max {int(labels.max())}"
        )


def _stratified_val_indices(labels: Tensor, val_fraction: float, seed: int) -> Tensor:
    """Indices of a per-class random ``val_fraction`` of the samples (at least one per class with >= 2 samples)."""
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        n = members.numel()
        k = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
        chosen.append(members[torch.randperm(n, generator=gen)[:k]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted indices (rest, held out) of a seeded per-class random ``fraction`` of the samples held out."""
    held = _stratified_val_indices(labels, fraction, seed)
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).flatten(), held


def split_train_val(data: ImageArrays, val_fraction: float, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
    """Carve a stratified validation split from training data (the paper validates on a small part of train).

    Every class keeps ``round(n_c * val_fraction)`` of its samples (at least one, never all) in ``val``; both parts
    keep the original order. The same ``seed`` always gives the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SSALError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return data, data.subset(torch.zeros(0, dtype=torch.long))
    train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
    log.debug("split %s: %d train / %d val", data.name, train_idx.numel(), val_idx.numel())
    return data.subset(train_idx), data.subset(val_idx)


def per_class_indices(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """Sorted indices of ``per_class`` seeded random samples of every class (all of a class that has fewer).

    The choice is a prefix of one seeded permutation per class, so smaller sizes are subsets of larger ones.
    """
    if per_class < 1:
        raise SSALError(f"per_class must be >= 1, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def per_class_subset(data: ImageArrays, per_class: int, seed: int = 0) -> ImageArrays:
    """A deterministic stratified subset of ``per_class`` images per class (``per_class`` 0: all of ``data``)."""
    if per_class == 0:
        return data
    idx = per_class_indices(data.labels, per_class, seed)
    log.info("data.per_class %d: %d of %d training images", per_class, idx.numel(), len(data))
    return data.subset(idx)
