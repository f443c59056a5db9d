"""Wide ResNets for CIFAR100 (supplementary Sec. B.2, Table 3): WRN 28-10 and SE-WRN 16-8.

Layout: 3x3 stem with 16 filters, three stages of basic blocks with 16k, 32k and 64k filters (k the widening
factor; the first stage keeps 32x32, the others halve the resolution), GAP, FC. Following supp. Table 3,
convolutions are succeeded by BN and ReLU (conv-BN-ReLU, post-activation). The SE variant puts a
Squeeze-and-Excitation block at the end of each residual block, before the shortcut is added (Hu et al. 2018).

Attachment points (``ssal_positions``), the seven points of paper Fig. 4 before, inside and after the macro
blocks: ``g1`` = ``stem``; ``g2`` = middle of stage 1; ``g3`` = end of stage 1; ``g4`` = middle of stage 2;
``g5`` = end of stage 2; ``g6`` = middle of stage 3; ``g7`` = end of stage 3 (the middle is after block
``ceil(n/2)`` of the n blocks of a stage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..heads import ConvBNReLU
from . import auxnets as aux
from .init import init_weights
from .registry import register_model

__all__ = ["SqueezeExcite", "WideBlock", "WideResNet", "sewrn16_8", "staged_positions", "wrn28_10"]


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from GAP -> FC(c/r) -> ReLU -> FC(c) -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, c, 1, 1)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class WideBlock(nn.Module):
    """conv-BN-ReLU, (dropout), conv-BN, (SE), add the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0, se_reduction: int | None = None):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3, stride)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.se = SqueezeExcite(cout, se_reduction) if se_reduction else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv2(self.drop(self.conv1(x))))
        return self.relu(out + self.shortcut(x))


def staged_positions(stem: str, stages: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Paper Fig. 4 positions: g1 = ``stem``, then (middle, end) of every stage.

    ``stages`` lists (stage module name, name of the child after which the stage's middle lies).
    """
    points = [stem]
    for stage, middle in stages:
        points += [f"{stage}.{middle}", stage]
    return {f"g{i + 1}": p for i, p in enumerate(points)}


class WideResNet(nn.Module):
    """WRN-d-k for 32x32 inputs (Zagoruyko & Komodakis 2016) with ``(d - 4) / 6`` blocks per stage."""

    def __init__(
        self, depth: int, widen: int, num_classes: int, dropout: float = 0.0, se_reduction: int | None = None
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        self.stem = ConvBNReLU(3, 16, 3)
        cin = 16
        for i, (w, s) in enumerate(zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2), strict=True)):
            blocks = [WideBlock(cin if j == 0 else w, w, s if j == 0 else 1, dropout, se_reduction) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.ssal_positions = staged_positions("stem", [(f"layer{i}", str(math.ceil(n / 2) - 1)) for i in (1, 2, 3)])
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, 64k, 8, 8)
        return self.fc(x.mean((2, 3)))


@register_model("wrn28_10", input_size=(3, 32, 32), paper_ssal=aux.WRN_SSAL, paper_num_classes=100)
def wrn28_10(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """WRN 28-10 (supp. Table 3): 4 blocks per stage, widths 160/320/640. Positions: see module docstring.

    Paper SSAL (supp. Table 9): AuxNet1 at g2 (20 groups), AuxNet2 at g5 (33), AuxNet3 at g6 (50).
    """
    return WideResNet(28, 10, num_classes, dropout)


@register_model("sewrn16_8", input_size=(3, 32, 32), paper_ssal=aux.SEWRN_SSAL, paper_num_classes=100)
def sewrn16_8(num_classes: int, dropout: float = 0.0, se_reduction: int = 16) -> nn.Module:
    """SE-WRN 16-8 (supp. Table 3): 2 blocks per stage, widths 128/256/512, SE (reduction 16) in every block.

    Paper SSAL (supp. Table 8): AuxNet1 at g2 (20 groups), AuxNet2 at g5 (33), AuxNet3 at g6 (50).
    """
    return WideResNet(16, 8, num_classes, dropout, se_reduction)
