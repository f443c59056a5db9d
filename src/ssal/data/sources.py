"""Readers that turn each supported data set into ``ImageArrays`` (uint8 images, int64 labels, class names)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import SSALError
from .arrays import ImageArrays

__all__ = ["DATASETS", "load_arrays"]

log = logging.getLogger(__name__)

#: Names accepted by ``load_arrays``.
DATASETS: tuple[str, ...] = ("cifar100", "cifar100_mini", "digits", "tinyimagenet")
SPLITS = ("train", "test")


def load_arrays(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ImageArrays:
    """Load a whole data set split into memory as ``ImageArrays``.

    ``cifar100``: ``root`` is the official ``cifar-100-python`` folder (or its parent) or the NumPy folder
    (train.npz/test.npz/meta.json); ``cifar100_mini``: mini_train.npz/mini_test.npz of the NumPy folder;
    ``digits``: scikit-learn's embedded digits (``root`` ignored); ``tinyimagenet``: the official folder layout
    (``test`` means its labelled ``val`` split; ``cache_dir`` keeps the decoded arrays for the next run).
    ``download=True`` fetches the official CIFAR-100 into ``root`` with torchvision if it is not there (users
    online only; never in tests).
    """
    if name not in DATASETS:
        raise SSALError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise SSALError(f"unknown split {split!r} for {name}; choose 'train' or 'test'")
    if name == "digits":
        return load_digits(split)
    if root is None:
        raise SSALError(f"data set {name} needs a data folder (root), none given")
    root = Path(root).expanduser()
    if download and name != "cifar100":
        raise SSALError(f"download is only available for cifar100, not {name}")
    if download and _find_cifar100(root, split) is None:
        from .cifar_pickle import download_cifar100

        download_cifar100(root)
    if not root.is_dir():
        raise SSALError(f"{name}: data folder {root} " + ("is not a folder" if root.exists() else "does not exist"))
    if name == "cifar100_mini":
        return _load_cifar_npz(root / f"mini_{split}.npz", root / "meta.json", "cifar100_mini")
    if name == "cifar100":
        return _load_cifar100(root, split)
    from .tinyimagenet import load_tinyimagenet

    return load_tinyimagenet(root, split, None if cache_dir is None else Path(cache_dir))


def _find_cifar100(root: Path, split: str) -> tuple[str, Path] | None:
    """("npz", folder) or ("official", folder) where CIFAR-100 is found under ``root``, else None."""
    from .cifar_pickle import find_official_cifar100

    if (root / f"{split}.npz").is_file():
        return "npz", root
    official = find_official_cifar100(root)
    return None if official is None else ("official", official)


def _load_cifar100(root: Path, split: str) -> ImageArrays:
    """CIFAR-100 from the NumPy folder or the official pickle folder (``root`` or ``root/cifar-100-python``)."""
    from .cifar_pickle import load_cifar100_official

    found = _find_cifar100(root, split)
    if found is not None and found[0] == "npz":
        return _load_cifar_npz(root / f"{split}.npz", root / "meta.json", "cifar100")
    if found is not None:
        return load_cifar100_official(found[1], split)
    raise SSALError(
        f"cifar100: no CIFAR-100 in {root}: expected {split}.npz + meta.json (NumPy arrays) or the official "
        "'cifar-100-python' folder with train/test/meta (download=True fetches it when online)"
    )


# --------------------------------------------------------------------------------------------- NumPy folder


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read ``keys`` from an .npz without pickle; SSALError for a missing, corrupt or incomplete file."""
    if not path.is_file():
        raise SSALError(f"missing data file {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise SSALError(f"{path}: missing array(s) {', '.join(missing)} (has {', '.join(z.files)})")
            out = {k: z[k] for k in keys}
    except SSALError:
        raise
    except Exception as e:  # a damaged header, zip or array: OSError, ValueError, SyntaxError, MemoryError, ...
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        if "pickle" in text:  # numpy's advice for object arrays is to load unsafely
            text = "it holds Python objects, not plain arrays"
        raise SSALError(f"{path}: corrupt or unreadable .npz file ({type(e).__name__}: {text})") from None
    bad = [k for k, v in out.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise SSALError(f"{path}: member(s) {', '.join(bad)} are not NumPy arrays (corrupt .npz file)")
    return out


def _read_meta(path: Path) -> dict:
    """CIFAR-100 ``meta.json`` (fine/coarse names and fine_to_coarse), checked."""
    if not path.is_file():
        raise SSALError(f"missing metadata file {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise SSALError(f"{path}: corrupt metadata ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(meta, dict):
        raise SSALError(f"{path}: expected a JSON object with fine_label_names, coarse_label_names, fine_to_coarse")
    missing = [k for k in ("fine_label_names", "coarse_label_names", "fine_to_coarse") if k not in meta]
    if missing:
        raise SSALError(f"{path}: missing {', '.join(missing)}")
    names, coarse, f2c = meta["fine_label_names"], meta["coarse_label_names"], meta["fine_to_coarse"]
    for key, value in (("fine_label_names", names), ("coarse_label_names", coarse)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise SSALError(f"{path}: {key} must be a non-empty list of strings")
    if not isinstance(f2c, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in f2c):
        raise SSALError(f"{path}: fine_to_coarse must be a list of integers")
    if len(names) != 100 or len(f2c) != 100:
        raise SSALError(
            f"{path}: expected 100 fine label names and fine_to_coarse entries, got {len(names)} and {len(f2c)}"
        )
    if any(not 0 <= c < len(coarse) for c in f2c):
        raise SSALError(f"{path}: fine_to_coarse entries must lie in [0, {len(coarse)})")
    return {"fine_label_names": list(names), "coarse_label_names": list(coarse), "fine_to_coarse": list(f2c)}


def labels_tensor(values: np.ndarray | list, what: str) -> torch.Tensor:
    """Labels as int64 (N,); SSALError for a non-integer or non-1-D array."""
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SSALError(f"{what}: labels must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def cifar_arrays(images_chw: torch.Tensor, fine, coarse, meta: dict, name: str, what: str) -> ImageArrays:
    """Validated CIFAR-100 ``ImageArrays`` from CHW uint8 images and fine/coarse label arrays."""
    fine_t, coarse_t = labels_tensor(fine, what), labels_tensor(coarse, what)
    if coarse_t.numel() and (int(coarse_t.min()) < 0 or int(coarse_t.max()) >= len(meta["coarse_label_names"])):
        raise SSALError(f"{what}: coarse labels out of range [0, {len(meta['coarse_label_names'])})")
    return ImageArrays(
        images=images_chw,
        labels=fine_t,
        class_names=meta["fine_label_names"],
        coarse_labels=coarse_t,
        fine_to_coarse=[int(c) for c in meta["fine_to_coarse"]],
        name=name,
        coarse_class_names=meta["coarse_label_names"],
    )


def _load_cifar_npz(path: Path, meta_path: Path, name: str) -> ImageArrays:
    """CIFAR-100 from the NumPy arrays (images uint8 (N, 32, 32, 3) HWC, fine_labels, coarse_labels)."""
    arrays = _read_npz(path, ("images", "fine_labels", "coarse_labels"))
    meta = _read_meta(meta_path)
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise SSALError(f"{path}: images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    log.info("loaded %s: %d images from %s", name, chw.shape[0], path)
    return cifar_arrays(chw, arrays["fine_labels"], arrays["coarse_labels"], meta, name, str(path))


# --------------------------------------------------------------------------------------------- digits


def load_digits(split: str) -> ImageArrays:
    """scikit-learn's 8x8 digits as 3x16x16 uint8 (grey replicated, 2x nearest upsampling).

    Deterministic stratified 80/20 train/test split (seed 0), so the demo needs no file and no download.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    from .arrays import stratified_split

    bunch = sk_load_digits()
    grey = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))  # (N, 8, 8), values 0..16
    images = grey.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, None].expand(-1, 3, -1, -1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = test_idx if split == "test" else train_idx
    return ImageArrays(images[idx].contiguous(), labels[idx], [str(d) for d in range(10)], name="digits")
