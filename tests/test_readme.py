"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, (100, 100)) + 50 * np.eye(100)
    ns = {"confusion": confusion, "images": torch.rand(2, 3, 32, 32), "labels": torch.tensor([3, 7])}
    exec(blocks[0], ns)  # noqa: S102 - our own documentation
    assert ns["probs"].shape == (2, 100) and torch.allclose(ns["probs"].sum(1), torch.ones(2))
    exec(blocks[1], ns)  # noqa: S102
    assert len(ns["wrn"].branches) == 3 and [b.num_groups for b in ns["wrn"].branches] == [20, 33, 50]
