"""The large-image path (ImageNet or any folder-per-class data set): torchvision ImageFolder + DataLoader with
worker processes, pinned memory and a DistributedSampler under DDP."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..errors import SSALError
from .arrays import stratified_split

__all__ = ["FolderSplit", "build_folder_loader", "check_images", "class_folders", "folder_transforms"]


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


def class_folders(folder: str | os.PathLike) -> list[str]:
    """The sorted names of the class folders in ``folder`` (hidden folders are not classes)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _decode(path: str) -> Any:
    """Open an image as RGB; a file that cannot be decoded is an ``SSALError`` naming it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SSALError(f"cannot decode image {path}: {e}") from None


def _image_folder(
    folder: Path, train: bool, image_size: int, resize: int, class_names: Sequence[str] | None = None
) -> Any:
    """torchvision's ImageFolder whose label of a class folder is its position in ``class_names`` (the class names
    of train/), so that a split with fewer classes keeps the labels of train/; a class folder that train/ does not
    have is an ``SSALError``."""
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise SSALError(f"image folder {folder} does not exist (expected <root>/<split>/<class>/<image files>)")
    names = list(class_names) if class_names is not None else None

    class _Named(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            present = class_folders(directory)
            if not present:
                raise FileNotFoundError(f"no class folder in {directory}")
            if names is None:
                return present, {c: i for i, c in enumerate(present)}
            extra = [c for c in present if c not in names]
            if extra:
                raise SSALError(
                    f"{directory} has class folder(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} "
                    f"that train/ does not have; every split must use the classes of train/"
                )
            return present, {c: names.index(c) for c in present}

    try:
        ds = _Named(str(folder), transform=folder_transforms(train, image_size, resize), loader=_decode)
    except SSALError:
        raise
    except (OSError, ValueError) as e:
        raise SSALError(f"{folder}: not an ImageFolder layout ({str(e).splitlines()[0]})") from None
    if names is not None:
        ds.classes, ds.class_to_idx = names, {c: i for i, c in enumerate(names)}
    return ds


def check_images(folder: str | os.PathLike, limit: int = 5) -> None:
    """Find unreadable images under ``folder`` before they are used: zero-byte files, files that are not images or
    whose header is corrupt, truncated JPEG/PNG files and images too large to decode. ``SSALError`` names them.

    Cheap enough for ImageNet: each file's header is parsed and its last bytes read; only a file whose end marker is
    missing is decoded in full.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    bad: list[str] = []
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.lower().endswith(IMG_EXTENSIONS):
                continue
            count += 1
            path = os.path.join(root, name)
            problem = _image_problem(path)
            if problem:
                bad.append(f"{path} ({problem})")
    if bad:
        more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
        raise SSALError(
            f"{len(bad)} of {count} images under {folder} cannot be read: {'; '.join(bad[:limit])}{more}; "
            "remove or replace them"
        )


def _image_problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used, or None."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            img = Image.open(f)
            fmt = img.format
            img.verify()
            f.seek(max(size - 1024, 0))
            tail = f.read()
        ends = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
        if fmt in ends and ends[fmt] not in tail:  # no end marker: decode to see whether it is truncated
            with open(path, "rb") as f:
                Image.open(f).load()
    except Image.DecompressionBombError:
        return "too large to decode"
    except Image.UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return str(e).splitlines()[0][:100] or type(e).__name__
    return None


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
    class_names: Sequence[str] | None = None,
) -> DataLoader:
    """A DataLoader over ``root/split`` (ImageFolder layout) yielding (x float (B, 3, S, S) in [0, 1], y int64).

    The label of a class folder is its position in ``class_names`` (default: the sorted folder names of this split),
    so evaluating on a split that lacks a class keeps the labels of training; the loader carries ``class_names``.
    Training shuffles with a sampler reseeded by ``loader.sampler.set_epoch(e)`` (Lightning calls it every epoch),
    so epoch e's order does not depend on how many epochs ran before in this process; under DDP
    (``distributed``) that sampler also shards the data.
    """
    if batch_size < 1 or workers < 0:
        raise SSALError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    split = split if isinstance(split, FolderSplit) else FolderSplit(split)
    folder = _image_folder(Path(root).expanduser() / split.folder, train, image_size, resize, class_names)
    dataset = folder
    if split.part != "all":
        rest, held = stratified_split(torch.as_tensor(folder.targets), split.fraction, split.seed)
        dataset = Subset(folder, (held if split.part == "holdout" else rest).tolist())
    if len(dataset) == 0:
        raise SSALError(f"{root}/{split} has no images")
    sampler, gen = None, torch.Generator().manual_seed(seed)
    if distributed or train:
        if not distributed:
            rank, world_size = 0, 1
        if not 0 <= rank < world_size:
            raise SSALError(f"rank must be in [0, world_size={world_size}), got {rank}")
        sampler = DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=False,  # workers restart every epoch, seeded from (seed, epoch, rank, worker)
        generator=gen,
        worker_init_fn=_seed_worker,
    )
    dataset.ssal_seed = (int(seed), int(rank))  # type: ignore[union-attr]
    dataset.ssal_epoch = 0  # type: ignore[union-attr]
    loader.class_names = list(folder.classes)
    loader.set_epoch = lambda epoch: _set_epoch(loader, epoch)  # type: ignore[attr-defined]
    log.info("%s/%s: %d images in %d classes", root, split, len(dataset), len(set(folder.targets)))
    return loader


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """Shuffle and augment epoch ``epoch`` the same way whatever ran before it (exact resume)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    loader.dataset.ssal_epoch = int(epoch)  # type: ignore[attr-defined]


def _seed_worker(worker_id: int) -> None:
    """Seed a worker's torch, NumPy and Python RNGs (the augmentation) from (seed, epoch, rank, worker id)."""
    ds = torch.utils.data.get_worker_info().dataset
    seed, rank = getattr(ds, "ssal_seed", (0, 0))
    s = (((seed * 1_000_003 + getattr(ds, "ssal_epoch", 0)) * 1_009 + rank) * 257 + worker_id) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
