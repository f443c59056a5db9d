"""Auxiliary heads g_i (paper Sec. 3.2, supplementary Sec. C) built from a small declarative spec.

A head spec is a string of tokens joined by ``-`` (or a list of the same tokens)::

    conv128k5s2   conv-BN-ReLU, 128 channels, kernel 5, stride 2 (k defaults to 3, s to 1)
    incC / incD / incE   Inception-v3 style blocks C, D, E (supplementary Fig. 1); ``incE0.5`` halves
                 every width and ``incEx2`` doubles it
    maxpool / avgpool    3x3 (max) or 2x2 (avg) pooling with stride 2
    gap          global average pooling (added automatically before the first fc if missing)
    fc768        hidden fully connected layer with ReLU
    drop0.2      dropout

The output layer (an FC with one unit per group) is always appended. Example: the CIFAR ResNet-50
AuxNet1 of supplementary Table 7 is ``conv128k5s2-conv128-incE-gap``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from .errors import SSALError

__all__ = [
    "DEFAULT_HEAD",
    "ConvBNReLU",
    "GlobalAvgPool",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "build_head",
    "parse_head",
]

#: The paper's Tiny ImageNet AuxNet1 (supplementary Table 6: 2x conv128, 2x conv256, GAP, FC-256),
#: with stride 2 on the third conv so that the cost stays bounded on large feature maps.
DEFAULT_HEAD = "conv128-conv128-conv256s2-conv256-gap-fc256"

_CONV = re.compile(r"^conv(\d+)(?:k(\d+))?(?:s(\d+))?$")
_INC = re.compile(r"^inc([CDE])(?:x(\d+(?:\.\d+)?)|(\d*\.\d+|\d+))?$")
_FC = re.compile(r"^fc(\d+)$")
_DROP = re.compile(r"^drop(0?\.\d+)$")


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU, 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 3, stride: int = 1) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        super().__init__(
            nn.Conv2d(cin, cout, (kh, kw), stride, padding=(kh // 2, kw // 2), bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class GlobalAvgPool(nn.Module):
    """Global average pooling to (B, C); a (B, C) input passes through unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) if x.dim() == 4 else x.flatten(1)


def _w(n: int, width: float) -> int:
    return max(8, int(round(n * width)))


class InceptionC(nn.Module):
    """Inception-v3 block C (factorised 7x7), supplementary Fig. 1a; output 4 * 192 * width channels."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        c7, co = _w(128, width), _w(192, width)
        self.b1 = ConvBNReLU(cin, co, 1)
        self.b7 = nn.Sequential(ConvBNReLU(cin, c7, 1), ConvBNReLU(c7, c7, (1, 7)), ConvBNReLU(c7, co, (7, 1)))
        self.b7dbl = nn.Sequential(
            ConvBNReLU(cin, c7, 1),
            ConvBNReLU(c7, c7, (7, 1)),
            ConvBNReLU(c7, c7, (1, 7)),
            ConvBNReLU(c7, c7, (7, 1)),
            ConvBNReLU(c7, co, (1, 7)),
        )
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBNReLU(cin, co, 1))
        self.out_channels = 4 * co

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b7(x), self.b7dbl(x), self.pool(x)], 1)


class InceptionD(nn.Module):
    """Inception-v3 block D (grid reduction, stride 2), supplementary Fig. 1b."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c3 = _w(192, width), _w(320, width)
        self.b3 = nn.Sequential(ConvBNReLU(cin, c1, 1), ConvBNReLU(c1, c3, 3, 2))
        self.b7 = nn.Sequential(
            ConvBNReLU(cin, c1, 1),
            ConvBNReLU(c1, c1, (1, 7)),
            ConvBNReLU(c1, c1, (7, 1)),
            ConvBNReLU(c1, c1, 3, 2),
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.out_channels = c3 + c1 + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b7(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    """Inception-v3 block E (expanded filter bank), supplementary Fig. 1c; output 2048 * width channels."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c3, cd, cp = _w(320, width), _w(384, width), _w(448, width), _w(192, width)
        self.b1 = ConvBNReLU(cin, c1, 1)
        self.b3 = ConvBNReLU(cin, c3, 1)
        self.b3a, self.b3b = ConvBNReLU(c3, c3, (1, 3)), ConvBNReLU(c3, c3, (3, 1))
        self.bd = nn.Sequential(ConvBNReLU(cin, cd, 1), ConvBNReLU(cd, c3, 3))
        self.bda, self.bdb = ConvBNReLU(c3, c3, (1, 3)), ConvBNReLU(c3, c3, (3, 1))
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), ConvBNReLU(cin, cp, 1))
        self.out_channels = c1 + 4 * c3 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3, bd = self.b3(x), self.bd(x)
        return torch.cat([self.b1(x), self.b3a(b3), self.b3b(b3), self.bda(bd), self.bdb(bd), self.pool(x)], 1)


_INCEPTION = {"C": InceptionC, "D": InceptionD, "E": InceptionE}


def parse_head(spec: str | Sequence[str]) -> list[str]:
    """Split and validate a head spec; returns its tokens."""
    tokens = spec.split("-") if isinstance(spec, str) else [str(t) for t in spec]
    tokens = [t.strip() for t in tokens if t.strip()]
    for t in tokens:
        if not (
            _CONV.match(t) or _INC.match(t) or _FC.match(t) or _DROP.match(t) or t in ("gap", "maxpool", "avgpool")
        ):
            raise SSALError(
                f"unknown head token {t!r}; use convC[kK][sS], incC|incD|incE[width], maxpool, avgpool, gap, fcN, dropP"
            )
    return tokens


def build_head(spec: str | Sequence[str], in_channels: int, num_outputs: int) -> nn.Sequential:
    """Build an auxiliary head from ``spec`` for a feature map with ``in_channels`` channels.

    The input may be a 4-D feature map (B, C, H, W) or, if the spec has no spatial layers, a 2-D
    feature vector (B, C).
    """
    layers: list[nn.Module] = []
    c, pooled = in_channels, False
    for t in parse_head(spec):
        if pooled and (_CONV.match(t) or _INC.match(t) or t in ("maxpool", "avgpool")):
            raise SSALError(f"head token {t!r} needs a feature map but comes after global pooling")
        if m := _CONV.match(t):
            cout, k, s = int(m[1]), int(m[2] or 3), int(m[3] or 1)
            layers.append(ConvBNReLU(c, cout, k, s))
            c = cout
        elif m := _INC.match(t):
            width = float(m[2]) if m[2] else float(m[3]) if m[3] else 1.0
            block = _INCEPTION[m[1]](c, width)
            layers.append(block)
            c = block.out_channels
        elif t == "maxpool":
            layers.append(nn.MaxPool2d(3, 2, 1))
        elif t == "avgpool":
            layers.append(nn.AvgPool2d(2, 2))
        elif t == "gap":
            layers.append(GlobalAvgPool())
            pooled = True
        elif m := _FC.match(t):
            if not pooled:
                layers.append(GlobalAvgPool())
                pooled = True
            layers += [nn.Linear(c, int(m[1])), nn.ReLU(inplace=True)]
            c = int(m[1])
        elif m := _DROP.match(t):
            layers.append(nn.Dropout(float(m[1])))
    if not pooled:
        layers.append(GlobalAvgPool())
    layers.append(nn.Linear(c, num_outputs))
    return nn.Sequential(*layers)
