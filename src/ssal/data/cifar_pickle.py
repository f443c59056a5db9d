"""The official ``cifar-100-python`` folder (files ``train``, ``test``, ``meta``: Python pickles, as torchvision
downloads them), read with a restricted unpickler that can only rebuild NumPy arrays and plain containers."""

from __future__ import annotations

import importlib
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SSALError
from .arrays import ImageArrays

__all__ = ["SafeUnpickler", "download_cifar100", "find_official_cifar100", "load_cifar100_official", "safe_load"]

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
    from .sources import cifar_arrays

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


def download_cifar100(root: str | Path) -> Path:
    """Download the official CIFAR-100 into ``root/cifar-100-python`` with torchvision (users online only)."""
    from torchvision.datasets import CIFAR100

    root = Path(root).expanduser()
    try:
        CIFAR100(str(root), train=True, download=True)
    except (OSError, RuntimeError) as e:
        raise SSALError(f"could not download CIFAR-100 into {root}: {e}") from None
    return root / OFFICIAL_DIR
