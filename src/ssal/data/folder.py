"""The large-image path (ImageNet or any folder-per-class data set): torchvision ImageFolder + DataLoader with
worker processes, pinned memory and a DistributedSampler under DDP."""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..errors import SSALError
from .arrays import per_class_indices, stratified_split
from .mixing import MixCollate, MixSettings

__all__ = [
    "FolderSplit",
    "build_folder_loader",
    "check_images",
    "class_folders",
    "empty_class_folders",
    "folder_transforms",
    "open_image",
    "to_rgb",
]


@dataclass(frozen=True)
class FolderSplit:
    """A split of an ImageFolder data set: a subfolder, or a seeded stratified part of one.

    ``part="holdout"`` is ``fraction`` of every class of ``folder`` (the validation split carved from train/, as for
    the in-memory data sets); ``part="rest"`` is everything else. The same seed always gives the same parts.
    ``per_class`` > 0 keeps a seeded stratified subset of that many images per class of the part (``data.per_class``).
    """

    folder: str
    part: str = "all"  # all | holdout | rest
    fraction: float = 0.0
    seed: int = 0
    per_class: int = 0

    def __str__(self) -> str:
        name = self.folder if self.part == "all" else f"{self.folder}[{self.part} {self.fraction:g}]"
        return f"{name}[{self.per_class} per class]" if self.per_class else name


log = logging.getLogger(__name__)


def folder_transforms(
    train: bool, image_size: int = 224, resize: int = 256, auto_augment: str = "none", random_erasing: float = 0.0
):
    """The paper's ImageNet transforms (torchvision ``transforms.v2``; pixels in [0, 1], normalisation left to the
    model).

    Train: RandomResizedCrop(image_size), ColorJitter(0.4, 0.4, 0.4), horizontal flip, then optionally
    ``auto_augment`` (``randaugment`` | ``trivialaugment``) and RandomErasing with probability ``random_erasing``
    (erased pixels 0); evaluation: Resize(resize) then CenterCrop(image_size).
    """
    import torch
    from torchvision.transforms import v2

    from .mixing import auto_augment_transform

    if train:
        steps = [v2.RandomResizedCrop(image_size), v2.ColorJitter(0.4, 0.4, 0.4), v2.RandomHorizontalFlip()]
        policy = auto_augment_transform(auto_augment)
        steps += [policy] if policy is not None else []
    else:
        steps = [v2.Resize(resize), v2.CenterCrop(image_size)]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing))
    return v2.Compose(steps)


def class_folders(folder: str | os.PathLike) -> list[str]:
    """The sorted names of the class folders in ``folder`` (hidden folders are not classes)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def empty_class_folders(folder: str | os.PathLike) -> list[str]:
    """The class folders in ``folder`` that hold no image file (at any depth, as ImageFolder looks)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    def has_images(path: str) -> bool:
        return any(f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(path) for f in files)

    return [c for c in class_folders(folder) if not has_images(os.path.join(folder, c))]


def open_image(path: str | os.PathLike) -> Any:
    """The image at ``path`` decoded as an RGB PIL image; a file that cannot be decoded, or one of more pixels than
    PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89 M), is an ``SSALError`` naming it."""
    try:
        return _open_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SSALError(f"cannot decode image {path}: too large (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except Image.UnidentifiedImageError:  # its message names the file object, not the file
        raise SSALError(f"cannot decode image {path}: not an image") from None
    except Exception as e:  # PIL's decoders raise OSError, ValueError, SyntaxError, EOFError, struct.error, ...
        raise SSALError(f"cannot decode image {path}: {_first_line(e)}") from None


def _open_rgb(path: str | os.PathLike) -> Any:

    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on damaged metadata: a file is judged by whether it decodes
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(f)
        img.load()
        return to_rgb(img)


def to_rgb(img: Any) -> Any:
    """A PIL image as 8-bit RGB. 16-bit grey (PNG) is scaled from 0..65535 to 0..255, where PIL's ``convert`` would
    clip it to almost white; pixels whose range is unknown (floating point, 32-bit integers) are an ``SSALError``."""
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):  # older PIL opens 16-bit PNGs as I
        a = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif img.mode in ("I", "F"):
        kind = "floating-point" if img.mode == "F" else "32-bit integer"
        raise SSALError(f"{kind} pixels of unknown range: save the image with 8 or 16 bits per channel")
    return img.convert("RGB")


def _decode(path: str) -> Any:
    """ImageFolder's loader: ``open_image``."""
    return open_image(path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:100] if text else type(e).__name__


def _image_folder(
    folder: Path,
    train: bool,
    image_size: int,
    resize: int,
    class_names: Sequence[str] | None = None,
    allow_empty: bool = False,
    augment: dict[str, Any] | None = None,
) -> Any:
    """torchvision's ImageFolder whose label of a class folder is its position in ``class_names`` (the class names
    of train/), so that a split with fewer classes keeps the labels of train/; a class folder that train/ does not
    have is an ``SSALError``. With ``allow_empty`` an empty class folder is a class without images."""
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
        tf = folder_transforms(train, image_size, resize, **(augment or {}) if train else {})
        ds = _Named(str(folder), transform=tf, loader=_decode, allow_empty=allow_empty)
    except SSALError:
        raise
    except (OSError, ValueError) as e:
        raise SSALError(f"{folder}: not an ImageFolder layout ({str(e).splitlines()[0]})") from None
    if names is not None:
        ds.classes, ds.class_to_idx = names, {c: i for i, c in enumerate(names)}
    return ds


#: What the last check of each folder found: (unreadable files with their problems, number of image files).
_CHECKED: dict[str, tuple[list[tuple[str, str]], int]] = {}
#: Broken files a warning has already named (``skip=True`` warns about each file once).
_WARNED: set[str] = set()


def check_images(
    folders: str | os.PathLike | Sequence[str | os.PathLike], limit: int = 5, skip: bool = False, reuse: bool = False
) -> list[str]:
    """Find unreadable images under ``folders`` before they are used: zero-byte files, files that are not images or
    whose header is corrupt, truncated files and images too large to decode.

    ``SSALError`` names them; with ``skip`` one warning line gives their count and the first ``limit`` of them
    instead, and their paths are returned (for the loader to leave out). ``reuse`` takes a folder's result from its
    last check in this process. Cheap enough for ImageNet: each JPEG's or PNG's header is parsed and its last bytes
    read; only a file whose end marker is missing is decoded in full.
    """
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    bad: list[tuple[str, str]] = []
    count = 0
    for folder in folders:
        key = os.path.abspath(folder)
        if not reuse or key not in _CHECKED:
            _CHECKED[key] = _scan(folder)
        bad += _CHECKED[key][0]
        count += _CHECKED[key][1]
    where = ", ".join(str(f) for f in folders)
    named = [f"{path} ({problem})" for path, problem in bad]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    if bad and not skip:
        raise SSALError(
            f"{len(bad)} of {count} images under {where} cannot be read: {'; '.join(named[:limit])}{more}; "
            "remove or replace them, or set data.skip_broken=true to leave them out"
        )
    if any(path not in _WARNED for path, _ in bad):
        _WARNED.update(path for path, _ in bad)
        log.warning(
            "skipping %d of %d images under %s that cannot be read (data.skip_broken): %s%s",
            len(bad),
            count,
            where,
            "; ".join(named[:limit]),
            more,
        )
    return [path for path, _ in bad]


def _scan(folder: str | os.PathLike) -> tuple[list[tuple[str, str]], int]:
    """(path, problem) of every unreadable image file under ``folder``, and the number of image files."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    bad: list[tuple[str, str]] = []
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(IMG_EXTENSIONS):
                count += 1
                path = os.path.join(root, name)
                problem = _image_problem(path)
                if problem:
                    bad.append((path, problem))
    return bad, count


def _image_problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used, or None.

    The header is parsed and checked (PNG: every chunk's CRC); a JPEG or PNG with its end marker is not decoded, any
    other file is decoded in full. A file damaged inside its JPEG data is only found when it is decoded.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(f)
            fmt, (width, height) = img.format, img.size
            img.verify()
            f.seek(max(size - 1024, 0))
            tail = f.read()
        if fmt == "PNG" and height * (1 + -(-width // 8)) > 1032 * size:  # deflate packs at most 1032:1
            return f"declares {width} x {height} pixels, more than a {size}-byte PNG can hold"
        ends = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
        if fmt not in ends or ends[fmt] not in tail:  # no end marker to look for, or none found: decode it all
            _open_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "too large to decode"
    except Image.UnidentifiedImageError:
        return "not an image"
    except Exception as e:  # PIL's parsers raise OSError, ValueError, SyntaxError, EOFError, struct.error, ...
        return _first_line(e)
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
    skip_broken: bool = False,
    mix: MixSettings | None = None,
    auto_augment: str = "none",
    random_erasing: float = 0.0,
) -> DataLoader:
    """A DataLoader over ``root/split`` (ImageFolder layout) yielding (x float (B, 3, S, S) in [0, 1], y int64).

    The label of a class folder is its position in ``class_names`` (default: the sorted folder names of this split),
    so evaluating on a split that lacks a class keeps the labels of training; the loader carries ``class_names``.
    ``skip_broken`` leaves out the files ``check_images`` finds unreadable (one warning names them).
    Training only: ``auto_augment``, ``random_erasing`` (``folder_transforms``) and ``mix`` (mixup / cutmix in the
    collate function, ``MixCollate``: y becomes soft targets (B, C)); workers draw from seeded generators.
    Training shuffles with a sampler reseeded by ``loader.sampler.set_epoch(e)`` (Lightning calls it every epoch),
    so epoch e's order does not depend on how many epochs ran before in this process; under DDP
    (``distributed``) that sampler also shards the data.
    """
    if batch_size < 1 or workers < 0:
        raise SSALError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    split = split if isinstance(split, FolderSplit) else FolderSplit(split)
    augment = {"auto_augment": auto_augment, "random_erasing": random_erasing}
    folder, dataset = _folder_dataset(
        root,
        split,
        train=train,
        image_size=image_size,
        resize=resize,
        class_names=class_names,
        skip_broken=skip_broken,
        augment=augment,
    )
    sampler, rank = _folder_sampler(
        dataset, train=train, distributed=distributed, rank=rank, world_size=world_size, seed=seed
    )
    collate = MixCollate(mix, len(folder.classes)) if train and mix is not None and mix.active else None
    loader = _epoch_loader(
        dataset, sampler, batch_size=batch_size, workers=workers, train=train, seed=seed, rank=rank, collate=collate
    )
    loader.class_names = list(folder.classes)
    targets = _targets(folder, dataset)
    log.info("%s/%s: %d images in %d classes", root, split, len(dataset), len(set(targets)))
    return loader


def _folder_dataset(
    root: str | os.PathLike,
    split: FolderSplit,
    *,
    train: bool,
    image_size: int,
    resize: int,
    class_names: Sequence[str] | None,
    skip_broken: bool,
    augment: dict[str, Any],
) -> tuple[Any, Any]:
    """The ImageFolder of ``split``'s folder under ``root`` and the data set ``split`` takes from it (non-empty)."""
    path = Path(root).expanduser() / split.folder  # val/ and test/ may lack a class, or hold it as an empty folder
    folder = _image_folder(path, train, image_size, resize, class_names, split.folder != "train", augment)
    if skip_broken:  # before a stratified split, which then divides the readable images
        _drop_broken(folder, path)
    dataset = _split_part(folder, split)
    if len(dataset) == 0:
        raise SSALError(f"{root}/{split} has no images")
    return folder, dataset


def _drop_broken(folder: Any, path: Path) -> None:
    """Leave the images ``check_images`` finds unreadable under ``path`` out of ``folder`` (one warning names them)."""
    found = check_images(path, skip=True, reuse=True)
    broken = {os.path.normpath(p) for p in found}
    folder.samples = [s for s in folder.samples if os.path.normpath(s[0]) not in broken]
    folder.imgs, folder.targets = folder.samples, [s[1] for s in folder.samples]


def _split_part(folder: Any, split: FolderSplit) -> Any:
    """``folder`` itself, or the ``Subset`` of it that ``split`` selects: its part, then ``per_class`` per class."""
    dataset = folder
    if split.part != "all":
        rest, held = stratified_split(torch.as_tensor(folder.targets), split.fraction, split.seed)
        dataset = Subset(folder, (held if split.part == "holdout" else rest).tolist())
    if split.per_class:  # of the part, so the held-out split is the same for every size
        targets = torch.as_tensor(_targets(folder, dataset))
        keep = per_class_indices(targets, split.per_class, split.seed).tolist()
        base = list(range(len(folder))) if dataset is folder else dataset.indices
        dataset = Subset(folder, [base[i] for i in keep])
    return dataset


def _targets(folder: Any, dataset: Any) -> list[int]:
    """The labels of ``dataset``, which is ``folder`` itself or a ``Subset`` of it."""
    return folder.targets if dataset is folder else [folder.targets[i] for i in dataset.indices]


def _folder_sampler(
    dataset: Any, *, train: bool, distributed: bool, rank: int, world_size: int, seed: int
) -> tuple[DistributedSampler | None, int]:
    """The loader's sampler (None: in order) and the rank the data set is seeded with.

    Training shuffles, seeded per epoch; under DDP the sampler also shards. Without DDP the rank is 0."""
    if not (distributed or train):
        return None, rank
    if not distributed:
        rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise SSALError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train), rank


def _epoch_loader(
    dataset: Any,
    sampler: DistributedSampler | None,
    *,
    batch_size: int,
    workers: int,
    train: bool,
    seed: int,
    rank: int,
    collate: Any,
) -> DataLoader:
    """A DataLoader over ``dataset`` whose ``set_epoch(e)`` makes epoch e's order and augmentation depend on e alone
    (with ``seed`` and ``rank``)."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=False,  # workers restart every epoch, seeded from (seed, epoch, rank, worker)
        generator=generator,
        worker_init_fn=_seed_worker,
        collate_fn=collate,
    )
    dataset.ssal_seed = (int(seed), int(rank))
    dataset.ssal_epoch = 0
    loader.set_epoch = lambda epoch: _set_epoch(loader, epoch)  # type: ignore[attr-defined]
    return loader


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """Shuffle and augment epoch ``epoch`` the same way whatever ran before it (exact resume)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    loader.dataset.ssal_epoch = int(epoch)  # type: ignore[attr-defined]


def _seed_worker(worker_id: int) -> None:
    """Seed a worker's torch, NumPy and Python RNGs (the augmentation) from (seed, epoch, rank, worker id).

    Not Lightning's ``pl_worker_init_function``: that one seeds from the process's base seed, which does not know
    the epoch, and exact mid-epoch resume needs epoch e's augmentation to depend on e alone."""
    ds = torch.utils.data.get_worker_info().dataset
    seed, rank = getattr(ds, "ssal_seed", (0, 0))
    s = (((seed * 1_000_003 + getattr(ds, "ssal_epoch", 0)) * 1_009 + rank) * 257 + worker_id) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
