"""DenseNet-BC for CIFAR100 (supplementary Sec. B.2, Table 4; Huang et al. 2017): 100-12 and 190-40.

Layout: 3x3 stem with 2k filters; three dense blocks of ``(L - 4) / 6`` bottleneck layers
(BN-ReLU-conv1x1 (4k) - BN-ReLU-conv3x3 (k), output concatenated to the input); transitions
BN-ReLU-conv1x1 with compression 0.5 and 2x2 average pooling; final BN-ReLU, GAP, FC.

Attachment points (``ssal_positions``), the seven points of paper Fig. 4: ``g1`` = ``stem``; ``g2`` = middle
of dense block 1 (after layer ``ceil(n/2)``); ``g3`` = end of dense block 1 (before the transition);
``g4`` / ``g5`` = middle / end of dense block 2; ``g6`` / ``g7`` = middle / end of dense block 3. A dense layer
outputs the concatenation of its input and its new features, so every point sees all features so far.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import auxnets as aux
from .init import init_weights
from .registry import register_model
from .wide_resnet import staged_positions

__all__ = ["DenseLayer", "DenseNetBC", "Transition", "densenet_bc_100_12", "densenet_bc_190_40"]


def _bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    )


class DenseLayer(nn.Module):
    """Bottleneck dense layer: (B, c) -> (B, c + growth), the input concatenated with k new maps."""

    def __init__(self, cin: int, growth: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bottleneck = _bn_relu_conv(cin, 4 * growth, 1)
        self.conv = _bn_relu_conv(4 * growth, growth, 3)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.drop(self.conv(self.bottleneck(x)))], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression) and 2x2 average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_bn_relu_conv(cin, cout, 1), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """DenseNet-BC-L-k for 32x32 inputs; modules ``stem``, ``dense1..3``, ``trans1..2``, ``post``, ``fc``."""

    def __init__(
        self, depth: int, growth: int, num_classes: int, compression: float = 0.5, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        c = 2 * growth
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        for i in (1, 2, 3):
            layers = nn.Sequential()
            for j in range(n):
                layers.add_module(f"layer{j + 1}", DenseLayer(c + j * growth, growth, dropout))
            self.add_module(f"dense{i}", layers)
            c += n * growth
            if i < 3:
                cout = int(math.floor(c * compression))
                self.add_module(f"trans{i}", Transition(c, cout))
                c = cout
        self.post = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.num_features = c
        self.fc = nn.Linear(c, num_classes)
        self.ssal_positions = staged_positions("stem", [(f"dense{i}", f"layer{math.ceil(n / 2)}") for i in (1, 2, 3)])
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.dense1(self.stem(x)))
        x = self.post(self.dense3(self.trans2(self.dense2(x))))  # (B, F, 8, 8)
        return self.fc(x.mean((2, 3)))


@register_model("densenet_bc_100_12", input_size=(3, 32, 32), paper_ssal=aux.DENSENET_SSAL, paper_num_classes=100)
def densenet_bc_100_12(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """DenseNet-BC 100-12 (supp. Table 4): 16 layers per block, stem 24. Positions: see module docstring."""
    return DenseNetBC(100, 12, num_classes, dropout=dropout)


@register_model("densenet_bc_190_40", input_size=(3, 32, 32), paper_ssal=aux.DENSENET_SSAL, paper_num_classes=100)
def densenet_bc_190_40(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """DenseNet-BC 190-40 (supp. Table 4): 31 layers per block, stem 80. Positions: see module docstring.

    Paper SSAL (supp. Table 9): AuxNet1 at g2 (20 groups), AuxNet2 at g5 (33), AuxNet3 at g6 (50).
    """
    return DenseNetBC(190, 40, num_classes, dropout=dropout)
