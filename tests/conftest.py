"""Shared fixtures. Real CIFAR-100 comes from SSAL_CIFAR100_DIR or ../shared/data/cifar100 beside the repo."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _cifar100_dir() -> Path:
    return Path(os.environ.get("SSAL_CIFAR100_DIR", REPO.parent / "shared" / "data" / "cifar100"))


@pytest.fixture(scope="session")
def cifar100_dir() -> Path:
    """The NumPy CIFAR-100 folder; skips without it, but fails in CI (CI=true), where it must be present."""
    d = _cifar100_dir()
    if not (d / "mini_train.npz").is_file():
        msg = f"CIFAR-100 arrays not found in {d} (set SSAL_CIFAR100_DIR to the folder with train.npz/mini_train.npz)"
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
