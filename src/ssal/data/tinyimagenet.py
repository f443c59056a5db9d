"""Tiny ImageNet (200 classes, 64x64) from its official folder layout, decoded once into uint8 ``ImageArrays``.

Layout (``root`` or ``root/tiny-imagenet-200``): ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``,
``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file, wnid, box). The official test split has no labels,
so split ``test`` reads the labelled ``val`` folder, as is usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import SSALError
from .arrays import ImageArrays
from .download import Archive, fetch_archive

__all__ = ["ARCHIVE", "download_tinyimagenet", "has_tinyimagenet", "load_tinyimagenet"]

log = logging.getLogger(__name__)

SIZE = 64
OFFICIAL_DIR = "tiny-imagenet-200"
#: The official archive (Stanford CS231n).
ARCHIVE = Archive(
    "Tiny ImageNet", "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
    "90528d7ca1a48142e341f4ef8d21d0de", OFFICIAL_DIR,
)  # fmt: skip


def has_tinyimagenet(root: Path) -> bool:
    """Whether ``root`` (or ``root/tiny-imagenet-200``) holds the official layout."""
    return any((d / "wnids.txt").is_file() for d in (root, root / OFFICIAL_DIR))


def _check_download(folder: Path) -> None:
    for part in ("wnids.txt", "train", "val/val_annotations.txt"):
        if not (folder / part).exists():
            raise SSALError(f"Tiny ImageNet: the archive lacks {OFFICIAL_DIR}/{part}")


def download_tinyimagenet(root: str | Path) -> Path:
    """Download the official Tiny ImageNet into ``root/tiny-imagenet-200`` (MD5-checked, atomic)."""
    return fetch_archive(ARCHIVE, root, _check_download)


def _find_root(root: Path) -> Path:
    for d in (root, root / OFFICIAL_DIR):
        if (d / "wnids.txt").is_file():
            return d
    raise SSALError(f"tinyimagenet: no wnids.txt in {root} or {root / OFFICIAL_DIR} (official Tiny ImageNet layout)")


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SSALError(f"tinyimagenet: missing file {path}")
    try:
        return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise SSALError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _class_names(root: Path, wnids: list[str]) -> list[str]:
    """Readable names from words.txt (first synonym), falling back to the wnid."""
    words = {}
    if (root / "words.txt").is_file():
        for line in _read_lines(root / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip() or wnid
    return [words.get(w, w) for w in wnids]


def _file_list(root: Path, split: str, index: dict[str, int]) -> list[tuple[Path, int]]:
    """(image path, label) pairs of one split."""
    if split == "train":
        files = []
        for wnid, label in index.items():
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise SSALError(f"tinyimagenet: missing folder {folder}")
            files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpeg", ".jpg", ".png")]
        return files
    files = []
    for line in _read_lines(root / "val" / "val_annotations.txt"):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise SSALError(f"{root / 'val' / 'val_annotations.txt'}: bad line {line!r} (unknown wnid or format)")
        files.append((root / "val" / "images" / parts[0], index[parts[1]]))
    return files


def _decode(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image to RGB uint8 (N, 64, 64, 3) (resized if needed); SSALError names a bad file."""
    images = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(files, desc="decoding Tiny ImageNet", unit="img", disable=None)):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (SIZE, SIZE):
                    im = im.resize((SIZE, SIZE), Image.BILINEAR)
                images[i] = np.asarray(im)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise SSALError(f"tinyimagenet: cannot read image {path} ({type(e).__name__}: {e})") from None
    return images, np.array([label for _, label in files], dtype=np.int64)


def load_tinyimagenet(root: Path, split: str) -> ImageArrays:
    """Tiny ImageNet ``split`` ("train" or "test" = official val) as uint8 (N, 3, 64, 64) with 200 class names."""
    root = _find_root(root)
    wnids = sorted(_read_lines(root / "wnids.txt"))
    index = {w: i for i, w in enumerate(wnids)}
    files = _file_list(root, split, index)
    if not files:
        raise SSALError(f"tinyimagenet: no images found for split {split!r} in {root}")
    images, labels = _decode(files)
    log.info("loaded tinyimagenet %s: %d images from %s", split, len(labels), root)
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageArrays(chw, torch.from_numpy(labels), _class_names(root, wnids), name="tinyimagenet")
