"""Shared fixtures. Real CIFAR-100 comes from the folder SSAL_CIFAR100_DIR names (`.ci/run` sets it)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def cifar100_dir() -> Path:
    """The NumPy CIFAR-100 folder; skips without it, but fails in CI (CI=true), where it must be present."""
    d = Path(os.environ.get("SSAL_CIFAR100_DIR", "")).expanduser()
    if not os.environ.get("SSAL_CIFAR100_DIR") or not (d / "mini_train.npz").is_file():
        where = f"in {d}" if os.environ.get("SSAL_CIFAR100_DIR") else "(SSAL_CIFAR100_DIR is not set)"
        msg = f"CIFAR-100 arrays not found {where}: set SSAL_CIFAR100_DIR to the folder with train.npz/mini_train.npz"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " -- required in CI")
        pytest.skip(msg)
    return d


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: a URL that is opened (e.g. a data set download that a test did not fake) fails."""

    def offline(request: object, *args: object, **kwargs: object) -> None:
        url = getattr(request, "full_url", request)
        raise urllib.error.URLError(f"tests do not download ({url})")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def _write_tree(root: Path, layout: dict[str, str], n: int = 3) -> None:
    """``layout`` maps a split to its class folder names (one letter each); class c's images are brighter."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = rng.random((12, 12, 3)) * 30 + 50 * "abcd".index(c)
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.png")


@pytest.fixture
def write_tree():
    """``write_tree(root, {split: "abc"}, n)``: a small ImageFolder tree of PNGs (see ``_write_tree``)."""
    return _write_tree
