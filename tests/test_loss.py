"""The SSAL loss beyond Eq. 3: group-aware label smoothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ssal
from ssal.config import load_config
from ssal.errors import SSALError

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_group_smoothing_puts_the_mass_on_group_mates_only() -> None:
    gamma = torch.tensor([0, 0, 0, 1, 2, 2])
    loss = ssal.SSALLoss([gamma], label_smoothing=0.3, group_smoothing=True)
    t = loss.group_smoothed_target(torch.tensor([0, 3, 5]))
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert torch.allclose(t[0], torch.tensor([0.7, 0.15, 0.15, 0, 0, 0]))
    assert torch.allclose(t[1], torch.tensor([0, 0, 0, 1.0, 0, 0]))  # alone in its group: all mass stays on y
    assert torch.allclose(t[2], torch.tensor([0, 0, 0, 0, 0.3, 0.7]))
    out = ssal.SSALOutput(torch.randn(3, 6), (torch.randn(3, 3),))
    y = torch.tensor([0, 3, 5])
    want = -(t * out.main.log_softmax(-1)).sum(1).mean()
    assert torch.allclose(loss(out, y).main, want, atol=1e-6)
    plain = ssal.SSALLoss([gamma], label_smoothing=0.3)(out, y).main
    assert not torch.allclose(plain, want)
    with pytest.raises(SSALError, match="group_smoothing"):
        ssal.SSALLoss([], label_smoothing=0.1, group_smoothing=True)
    with pytest.raises(SSALError, match="optim.group_smoothing"):
        load_config(DEMO, ["optim.group_smoothing=true"])  # label smoothing 0 in the demo
