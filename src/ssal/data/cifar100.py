"""CIFAR-100 in its two on-disk forms, read into ``ImageArrays``: the NumPy folder (``train.npz``/``test.npz``/
``meta.json``, and ``mini_*.npz`` for ``cifar100_mini``) and the official ``cifar-100-python`` folder (Python pickles
``train``, ``test``, ``meta`` as torchvision downloads them), the latter read with a restricted unpickler that can
only rebuild NumPy arrays and plain containers."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SSALError
from .arrays import ImageArrays
from .download import Archive, fetch_archive

__all__ = [
    "SafeUnpickler",
    "cifar100_archive",
    "download_cifar100",
    "has_cifar100",
    "has_cifar100_mini",
    "load_cifar100",
    "load_cifar100_mini",
    "mini_subset",
    "safe_load",
]

log = logging.getLogger(__name__)

OFFICIAL_DIR = "cifar-100-python"


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _allowed() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may reference: NumPy array reconstruction and bytes decoding."""
    ma = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    numeric = importlib.import_module(ma.__name__.replace("multiarray", "numeric"))
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer  # protocol-5 pickles of arrays
    allowed[("_codecs", "encode")] = __import__("codecs").encode  # protocol-2 pickles of bytes (py3 writers)
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global except NumPy array/dtype reconstruction (no code execution)."""

    _ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data file") from None


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` with ``SafeUnpickler`` (latin1 for Python 2 pickles); SSALError if missing or corrupt."""
    if not path.is_file():
        raise SSALError(f"missing data file {path}")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise SSALError(f"{path}: corrupt or unreadable data file ({type(e).__name__}: {e})") from None


def find_official_cifar100(root: Path) -> Path | None:
    """The folder holding ``train``/``test``/``meta`` pickles: ``root`` itself or ``root/cifar-100-python``."""
    for d in (root, root / OFFICIAL_DIR):
        if (d / "meta").is_file() and ((d / "train").is_file() or (d / "test").is_file()):
            return d
    return None


def _get(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise SSALError(f"{path}: expected a dict in the pickle, got {type(d).__name__}")
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise SSALError(f"{path}: missing entry {key!r} (has {', '.join(map(str, d))})")


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_cifar100_official(folder: Path, split: str) -> ImageArrays:
    """CIFAR-100 from the official pickles: ``data`` uint8 (N, 3072) = (N, 3, 32, 32) CHW, fine/coarse labels."""
    meta_raw = safe_load(folder / "meta")
    fine_names = _names(_get(meta_raw, "fine_label_names", folder / "meta"))
    coarse_names = _names(_get(meta_raw, "coarse_label_names", folder / "meta"))
    raw = safe_load(folder / split)
    data = np.asarray(_get(raw, "data", folder / split))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise SSALError(f"{folder / split}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    fine = np.asarray(_get(raw, "fine_labels", folder / split))
    coarse = np.asarray(_get(raw, "coarse_labels", folder / split))
    if fine.shape != coarse.shape:
        raise SSALError(f"{folder / split}: fine_labels {fine.shape} and coarse_labels {coarse.shape} differ")
    meta = {
        "fine_label_names": fine_names,
        "coarse_label_names": coarse_names,
        "fine_to_coarse": _fine_to_coarse(fine, coarse, len(fine_names)),
    }
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    log.info("loaded cifar100: %d images from %s", images.shape[0], folder / split)
    return cifar_arrays(images, fine, coarse, meta, "cifar100", str(folder / split))


def _fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, num_fine: int) -> list[int]:
    """Each fine class's superclass, read off the labels (-1 for a class absent from the split)."""
    f2c = np.full(num_fine, -1, dtype=np.int64)
    valid = (fine >= 0) & (fine < num_fine)
    f2c[fine[valid]] = coarse[valid]
    return f2c.tolist()


def cifar100_archive() -> Archive:
    """The official CIFAR-100 archive (URL, MD5 and folder as torchvision's ``CIFAR100`` knows them)."""
    from torchvision.datasets import CIFAR100

    return Archive("CIFAR-100", CIFAR100.url, CIFAR100.filename, CIFAR100.tgz_md5, CIFAR100.base_folder)


def has_cifar100(root: Path) -> bool:
    """Whether ``root`` holds CIFAR-100 in either form (NumPy folder or official pickles)."""
    return (root / "train.npz").is_file() or find_official_cifar100(root) is not None


def has_cifar100_mini(root: Path) -> bool:
    """Whether ``root`` holds the mini arrays, or the full CIFAR-100 they can be made from."""
    return any((root / f"mini_{s}.npz").is_file() for s in ("train", "test")) or has_cifar100(root)


def _check_official(folder: Path) -> None:
    if find_official_cifar100(folder) != folder or not (folder / "test").is_file():
        raise SSALError(f"CIFAR-100: the archive lacks train, test or meta in {folder.name}/")


def download_cifar100(root: str | Path) -> Path:
    """Download the official CIFAR-100 into ``root/cifar-100-python`` (MD5-checked, atomic; see ``fetch_archive``);
    nothing is downloaded if it is already there."""
    return fetch_archive(cifar100_archive(), root, _check_official)


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


def _labels(values: np.ndarray | list, what: str) -> torch.Tensor:
    """Labels as int64 (N,); SSALError for a non-integer or non-1-D array."""
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SSALError(f"{what}: labels must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def cifar_arrays(images_chw: torch.Tensor, fine, coarse, meta: dict, name: str, what: str) -> ImageArrays:
    """Validated CIFAR-100 ``ImageArrays`` from CHW uint8 images and fine/coarse label arrays."""
    fine_t, coarse_t = _labels(fine, what), _labels(coarse, what)
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


def _load_npz(path: Path, meta_path: Path, name: str) -> ImageArrays:
    """CIFAR-100 from the NumPy arrays (images uint8 (N, 32, 32, 3) HWC, fine_labels, coarse_labels)."""
    arrays = _read_npz(path, ("images", "fine_labels", "coarse_labels"))
    meta = _read_meta(meta_path)
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise SSALError(f"{path}: images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    log.info("loaded %s: %d images from %s", name, chw.shape[0], path)
    return cifar_arrays(chw, arrays["fine_labels"], arrays["coarse_labels"], meta, name, str(path))


def load_cifar100(root: Path, split: str) -> ImageArrays:
    """CIFAR-100 from the NumPy folder or the official pickle folder (``root`` or ``root/cifar-100-python``)."""
    if (root / f"{split}.npz").is_file():
        return _load_npz(root / f"{split}.npz", root / "meta.json", "cifar100")
    official = find_official_cifar100(root)
    if official is not None:
        return load_cifar100_official(official, split)
    raise SSALError(
        f"cifar100: no CIFAR-100 in {root}: expected {split}.npz + meta.json (NumPy arrays) or the official "
        "'cifar-100-python' folder with train/test/meta (data.download=true fetches it)"
    )


#: Images per class of ``cifar100_mini``: the first ones of each class, in the order of the official files.
MINI_PER_CLASS = {"train": 20, "test": 5}


def mini_subset(data: ImageArrays, per_class: int) -> ImageArrays:
    """The first ``per_class`` images of every class (in file order), sorted by class: ``cifar100_mini``."""
    labels = data.labels.numpy()
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(data.num_classes)])
    return dataclasses.replace(data.subset(torch.from_numpy(idx)), name="cifar100_mini")


def load_cifar100_mini(root: Path, split: str) -> ImageArrays:
    """The class-balanced CIFAR-100 subset: ``mini_train.npz``/``mini_test.npz`` of the NumPy folder, else made from
    the full data set (the first 20 train / 5 test images of each class, which is how those files were made)."""
    full = (root / f"{split}.npz").is_file() or find_official_cifar100(root) is not None
    if not (root / f"mini_{split}.npz").is_file() and full:
        return mini_subset(load_cifar100(root, split), MINI_PER_CLASS[split])
    return _load_npz(root / f"mini_{split}.npz", root / "meta.json", "cifar100_mini")
