"""Tiny networks for demos and tests (the digits demo, smoke tests); not from the paper."""

from __future__ import annotations

import torch
from torch import nn

from ..heads import ConvBNReLU
from .registry import register_model

__all__ = ["SmallCNN", "small_cnn"]


class SmallCNN(nn.Module):
    """Three conv stages and a linear classifier (about 25k parameters at C = 10); works on any input size.

    Stages: ``stage1`` (width w, full resolution), ``stage2`` (2w, /2), ``stage3`` (4w, /4).

    Attachment points (``ssal_positions``): ``g1`` = ``stage1``, ``g2`` = ``stage2``, ``g3`` = ``stage3``.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        w = int(width)
        self.stage1 = ConvBNReLU(in_channels, w, 3)
        self.stage2 = nn.Sequential(ConvBNReLU(w, 2 * w, 3, 2), ConvBNReLU(2 * w, 2 * w, 3))
        self.stage3 = ConvBNReLU(2 * w, 4 * w, 3, 2)
        self.fc = nn.Linear(4 * w, num_classes)
        self.ssal_positions = {"g1": "stage1", "g2": "stage2", "g3": "stage3"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))  # (B, 4w, H/4, W/4)
        return self.fc(x.mean((2, 3)))


@register_model(
    "small_cnn",
    input_size=(3, 16, 16),
    paper_ssal=[{"at": "g2", "k": 4, "head": "conv32-gap"}, {"at": "g3", "k": 5, "head": "conv32-gap"}],
)
def small_cnn(num_classes: int, width: int = 16, in_channels: int = 3) -> nn.Module:
    """A tiny CNN (not from the paper) for the digits demo and tests; its "paper" SSAL is two small branches."""
    return SmallCNN(num_classes, width, in_channels)
