"""The data sets ssal knows, one ``DatasetSpec`` each: every layer (config, build, prediction, export) reads a data
set's facts from here, and ``load_arrays`` reads the in-memory ones into ``ImageArrays``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SSALError
from .arrays import ImageArrays, stratified_split
from .cifar100 import (
    cifar100_archive,
    download_cifar100,
    has_cifar100,
    has_cifar100_mini,
    load_cifar100,
    load_cifar100_mini,
)
from .download import Archive, data_home
from .tinyimagenet import ARCHIVE as TINYIMAGENET_ARCHIVE
from .tinyimagenet import download_tinyimagenet, has_tinyimagenet, load_tinyimagenet

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DatasetSpec",
    "dataset_spec",
    "default_root",
    "load_arrays",
    "load_digits",
]

#: Augmentations of the in-memory path (``data.augment``): "cifar" = random shift + horizontal flip (paper Sec. 4,
#: the authors' code); "shift" = shift only (digits); "none". Folder data always uses the ImageNet transforms.
AUGMENTATIONS: tuple[str, ...] = ("cifar", "shift", "none")
SPLITS = ("train", "test")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """The facts of one data set.

    ``mean``/``std`` are per-channel statistics of the training pixels in [0, 1] (the model normalises inside);
    ``image_size`` is the side of the images a model trained on it sees (None: the model's or its weights');
    ``load(root, split)`` reads a split into memory (None: the ImageFolder DataLoader path). A data set that can be
    downloaded has ``folder`` (its default folder under ``data_home()``), ``found(root)`` (whether ``root`` holds it),
    ``download(root)`` (fetch it into ``root``) and ``archive()`` (the official archive, for messages).
    """

    name: str
    num_classes: int | None  # None: counted from the class folders of train/
    image_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # where the images and the class names come from
    load: Callable[[Path, str], ImageArrays] | None = None
    folder: str | None = None
    found: Callable[[Path], bool] | None = None
    download: Callable[[Path], Path] | None = None
    archive: Callable[[], Archive] | None = None

    @property
    def in_memory(self) -> bool:
        """True for the in-memory ``DeviceLoader`` path, False for ImageFolder data."""
        return self.load is not None

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images, if the data set fixes it."""
        return None if self.image_size is None else (3, self.image_size, self.image_size)


def load_digits(root: Path | None = None, split: str = "train") -> ImageArrays:
    """scikit-learn's 8x8 digits as 3x16x16 uint8 (grey replicated, 2x nearest upsampling); ``root`` is ignored.

    Deterministic stratified 80/20 train/test split (seed 0), so the demo needs no file and no download.
    """
    from sklearn.datasets import load_digits as sk_load_digits  # scikit-learn is slow to import: only when used

    bunch = sk_load_digits()
    grey = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))  # (N, 8, 8), values 0..16
    images = grey.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, None].expand(-1, 3, -1, -1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = test_idx if split == "test" else train_idx
    return ImageArrays(images[idx].contiguous(), labels[idx], [str(d) for d in range(10)], name="digits")


_CIFAR_MEAN, _CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

#: Every data set by ``data.name``. CIFAR-100 statistics are the widely quoted ones (checked against train.npz in
#: the tests); digits' were computed on all 1797 images (grey, so the channels agree); Tiny ImageNet's and
#: ImageNet's (folder data) are the commonly used constants.
DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "cifar100", 100, 32, _CIFAR_MEAN, _CIFAR_STD,
            "NumPy folder (train.npz, test.npz, meta.json) or the official cifar-100-python pickles; fine and "
            "coarse names from the metadata", load_cifar100,
            "cifar100", has_cifar100, download_cifar100, cifar100_archive,
        ),
        DatasetSpec(
            "cifar100_mini", 100, 32, _CIFAR_MEAN, _CIFAR_STD,
            "mini_train.npz / mini_test.npz of the CIFAR-100 NumPy folder, else the first 20 train / 5 test images "
            "per class of CIFAR-100", load_cifar100_mini,
            "cifar100", has_cifar100_mini, download_cifar100, cifar100_archive,
        ),
        DatasetSpec(
            "digits", 10, 16, (0.3053,) * 3, (0.3759,) * 3,
            "scikit-learn's embedded digits (no file); class names 0-9", load_digits,
        ),
        DatasetSpec(
            "tinyimagenet", 200, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
            "the official tiny-imagenet-200 folder (test = its labelled val split); names from words.txt",
            load_tinyimagenet,
            "tinyimagenet", has_tinyimagenet, download_tinyimagenet, lambda: TINYIMAGENET_ARCHIVE,
        ),
        DatasetSpec(
            "folder", None, None, _IMAGENET_MEAN, _IMAGENET_STD,
            "an ImageFolder tree root/train/<class>/*, root/val/<class>/* (e.g. ImageNet); class folder names",
        ),
    )
}  # fmt: skip


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name``; SSALError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise SSALError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}") from None


def default_root(name: str) -> str:
    """The default data folder of data set ``name``: ``data_home()/<folder>``, or "" if it has none (digits needs no
    folder; an ImageFolder tree must be named)."""
    folder = dataset_spec(name).folder
    return str(data_home() / folder) if folder else ""


def load_arrays(
    name: str, root: str | os.PathLike | None = None, split: str = "train", download: bool = False
) -> ImageArrays:
    """Load a whole split of an in-memory data set as ``ImageArrays`` (``root``: its folder, see ``DATASETS``).

    With ``download``, a data set that can be downloaded and is not in ``root`` is fetched there first.
    """
    spec = dataset_spec(name)
    if spec.load is None:
        raise SSALError(f"data set {name} is read from its folder by a DataLoader, not into memory")
    if split not in SPLITS:
        raise SSALError(f"unknown split {split!r} for {name}; choose 'train' or 'test'")
    if spec.load is load_digits:
        return load_digits(None, split)
    if root is None or str(root) == "":
        raise SSALError(f"data set {name} needs a data folder (root), none given")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise SSALError(f"{name}: data folder {root} is not a folder")
    if spec.found is not None and spec.download is not None and not spec.found(root):
        if download:
            spec.download(root)
        elif spec.archive is not None:
            problem = "does not exist" if not root.exists() else f"has no {spec.archive().name}"
            raise SSALError(
                f"{name}: data folder {root} {problem}; set data.download=true to fetch it there, or "
                f"{spec.archive().instructions(root)}"
            )
    if not root.is_dir():
        raise SSALError(f"{name}: data folder {root} does not exist")
    return spec.load(root, split)
