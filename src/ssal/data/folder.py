"""The large-image path (ImageNet or any folder-per-class data set): torchvision ImageFolder + DataLoader with
worker processes, pinned memory and a DistributedSampler under DDP."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..errors import SSALError
from .arrays import stratified_split

__all__ = ["FolderSplit", "build_folder_loader", "folder_transforms"]


@dataclass(frozen=True)
class FolderSplit:
    """A split of an ImageFolder data set: a subfolder, or a seeded stratified part of one.

    ``part="holdout"`` is ``fraction`` of every class of ``folder`` (the validation split carved from train/, as for
    the in-memory data sets); ``part="rest"`` is everything else. The same seed always gives the same parts.
    """

    folder: str
    part: str = "all"  # all | holdout | rest
    fraction: float = 0.0
    seed: int = 0

    def __str__(self) -> str:
        return self.folder if self.part == "all" else f"{self.folder}[{self.part} {self.fraction:g}]"


log = logging.getLogger(__name__)


def folder_transforms(train: bool, image_size: int = 224, resize: int = 256):
    """The paper's ImageNet transforms (pixels in [0, 1], normalisation left to the model).

    Train: RandomResizedCrop(image_size), ColorJitter(0.4, 0.4, 0.4), horizontal flip; evaluation: Resize(resize)
    then CenterCrop(image_size).
    """
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(image_size), T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(resize), T.CenterCrop(image_size)]
    return T.Compose([*steps, T.ToTensor()])


def _image_folder(folder: Path, train: bool, image_size: int, resize: int):
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise SSALError(f"image folder {folder} does not exist (expected <root>/<split>/<class>/<image files>)")
    try:
        return ImageFolder(str(folder), transform=folder_transforms(train, image_size, resize))
    except (FileNotFoundError, OSError) as e:
        raise SSALError(f"{folder}: not an ImageFolder layout ({e})") from None


def build_folder_loader(
    root: str | os.PathLike,
    split: str | FolderSplit,
    batch_size: int,
    *,
    train: bool,
    workers: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    image_size: int = 224,
    resize: int = 256,
) -> DataLoader:
    """A DataLoader over ``root/split`` (ImageFolder layout) yielding (x float (B, 3, S, S) in [0, 1], y int64).

    The loader carries ``class_names`` (the sorted folder names). Under DDP (``distributed``) a DistributedSampler
    shards the data; call ``loader.sampler.set_epoch(e)`` every epoch (Lightning does).
    """
    if batch_size < 1 or workers < 0:
        raise SSALError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    split = split if isinstance(split, FolderSplit) else FolderSplit(split)
    folder = _image_folder(Path(root).expanduser() / split.folder, train, image_size, resize)
    dataset = folder
    if split.part != "all":
        rest, held = stratified_split(torch.as_tensor(folder.targets), split.fraction, split.seed)
        dataset = Subset(folder, (held if split.part == "holdout" else rest).tolist())
    sampler, gen = None, torch.Generator().manual_seed(seed)
    if distributed:
        if not 0 <= rank < world_size:
            raise SSALError(f"rank must be in [0, world_size={world_size}), got {rank}")
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=workers > 0,
        generator=gen,
    )
    loader.class_names = list(folder.classes)
    log.info("%s/%s: %d images in %d classes", root, split, len(dataset), len(folder.classes))
    return loader
