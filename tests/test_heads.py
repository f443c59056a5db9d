"""Heads: the head-less branch at ``output`` and its group log-probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ssal
from ssal.heads import group_log_probs


def test_group_log_probs_are_logsumexp_over_members_and_exact_far_in_the_tail() -> None:
    z = torch.randn(4, 6) * 50  # large logits: naive exp/sum/log would underflow to -inf
    gamma = torch.tensor([0, 1, 0, 2, 1, 2])
    got = group_log_probs(z, gamma, 3)
    want = torch.stack([z.log_softmax(-1)[:, gamma == k].logsumexp(1) for k in range(3)], 1)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.exp().sum(1), torch.ones(4), atol=1e-5)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_output_branch_has_no_parameters_and_trains_f_towards_the_group() -> None:
    g = ssal.Grouping((0, 0, 1, 1, 2, 2), 3)
    model = ssal.SSALModel(_Tiny(), [ssal.Branch("output", g)], input_size=(3, 8, 8))
    assert sum(p.numel() for p in model.branches.parameters()) == 0
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    out = model(x)
    assert out.aux[0].shape == (5, 3)
    assert torch.allclose(out.aux[0], group_log_probs(out.main, model.gammas[0], 3))
    loss = ssal.SSALLoss(model.gammas, aux_weights=1.0)
    parts = loss(out, y)
    assert torch.allclose(parts.aux[0], F.nll_loss(out.aux[0], model.gammas[0][y]))
    parts.total.backward()
    assert model.backbone.fc.weight.grad is not None
