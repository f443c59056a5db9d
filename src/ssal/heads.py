"""Auxiliary heads g_i (paper Sec. 3.2, supplementary Sec. C) built from a small declarative spec.

A head spec is a string of tokens joined by ``-`` (or a list of the same tokens)::

    conv128k5s2   conv-BN-ReLU, 128 channels, kernel 5, stride 2 (k defaults to 3, s to 1)
    incC / incD / incE   Inception-v3 style blocks C, D, E (supplementary Fig. 1); ``incE0.5`` halves
                 every width and ``incEx2`` doubles it
    maxpool / avgpool    3x3 (max) or 2x2 (avg) pooling with stride 2
    gap          global average pooling (added automatically before the first fc if missing); on tokens, the
                 mean of the patch tokens (prefix tokens such as the class token left out)
    fc768        hidden fully connected layer with ReLU
    drop0.2      dropout

Token heads (for token sequences (B, N, D) of ViT-style models; any layout is turned into tokens first)::

    ln           LayerNorm over the feature width
    tfm / tfm4   a small pre-norm transformer block (4 attention heads; default: width / 32, at most 8)
    cls          take the class token (the first token; needs a layout with a class token)

A branch attached at ``output`` (f's own logits) has no head at all: its group log-probabilities are read off f's
class probabilities (``OutputGroups``), a group loss at no extra compute.

The output layer (an FC with one unit per group) is always appended. Example: the CIFAR ResNet-50
AuxNet1 of supplementary Table 7 is ``conv128k5s2-conv128-incE-gap``; ``ln-gap`` is the default head on tokens
(norm, mean of the patch tokens, linear) and ``tfm-ln-cls`` one with a transformer block.

A spec may also be the name of one of the paper's auxiliary networks (``AUXNETS``, e.g. ``tiny_auxnet1``).

Convolutional heads need a map (B, C, H, W): a channels-last map (B, H, W, C) is permuted, and patch tokens are
laid out on their square grid, before the first layer (``build_head(..., layout=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from .errors import SSALError
from .features import Layout

__all__ = [
    "AUXNETS",
    "DEFAULT_HEAD",
    "DEFAULT_TOKEN_HEAD",
    "ConvBNReLU",
    "GlobalAvgPool",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "OutputGroups",
    "ToMap",
    "ToTokens",
    "TokenPool",
    "build_head",
    "group_log_probs",
    "parse_head",
]

#: The paper's Tiny ImageNet AuxNet1 (supplementary Table 6: 2x conv128, 2x conv256, GAP, FC-256),
#: with stride 2 on the third conv so that the cost stays bounded on large feature maps.
DEFAULT_HEAD = "conv128-conv128-conv256s2-conv256-gap-fc256"

_CONV = re.compile(r"^conv(\d+)(?:k(\d+))?(?:s(\d+))?$")
_INC = re.compile(r"^inc([CDE])(?:x(\d+(?:\.\d+)?)|(\d*\.\d+|\d+))?$")
_FC = re.compile(r"^fc(\d+)$")
_DROP = re.compile(r"^drop(0?\.\d+)$")
_TFM = re.compile(r"^tfm(\d+)?$")

#: The default head on token sequences: LayerNorm, mean of the patch tokens, linear.
DEFAULT_TOKEN_HEAD = "ln-gap"

#: The paper's auxiliary networks (supplementary Sec. C, Tables 6-10) by name, usable wherever a head spec is.
#: ``incE0.3`` is an AuxInceptionE block (supp. Fig. 1c) with every Inception-v3 width scaled by 0.3. Where the
#: paper under-specifies a head (widths of the Inception-like blocks, a hidden FC) the choice is written next to it
#: and in ``docs/parameters.md``; widths were tuned so that the parameter counts match the paper's Tables 1-3
#: (``python -m ssal.models.params``).
AUXNETS: dict[str, str] = {
    # Tiny ImageNet ResNet-18 (supp. Table 6), exactly as in the table: 2x conv3x3-128, 2x conv3x3-256, GAP,
    # FC-256 (AuxNet1); AuxNet2 drops the 128 convs. AuxNet1 is also the head of the paper's Fig. 2 ablation.
    "tiny_auxnet1": "conv128-conv128-conv256-conv256-gap-fc256",
    "tiny_auxnet2": "conv256-conv256-gap-fc256",
    # ResNet-18, CIFAR100 (paper Sec. 4.2, Table 1): "two convolutional layers with batch-normalization and ReLU
    # followed by an inception-like layer, global average pooling and a linear output layer". Choice: the CIFAR
    # AuxNet1/AuxNet2 convs of supp. Table 7/8 (5x5 stride 2 on the 32x32 map, 5x5 on the 16x16 map) and an
    # AuxInceptionE at 0.3 width.
    "resnet18_cifar_g1": "conv128k5s2-conv128-incE0.3-gap",
    "resnet18_cifar_g2": "conv128k5-conv128-incE0.3-gap",
    # ResNet-50, CIFAR100 (supp. Table 7). Reading of the merged table cells: AuxConv2 (3x3-128) and AuxConv3
    # (AuxInceptionE) are shared by all three. Choice: AuxInceptionE width 0.3 (Table 1: 25.07M with one branch,
    # 28.89M with three).
    "resnet50_cifar_auxnet1": "conv128k5s2-conv128-incE0.3-gap",
    "resnet50_cifar_auxnet2": "conv128k5-conv128-incE0.3-gap",
    "resnet50_cifar_auxnet3": "conv128-conv128-incE0.3-gap",
    # SE-WRN 16-8, CIFAR100 (supp. Table 8). Choice: AuxInceptionE width 0.4 (Table 3: 14.9M).
    "sewrn_auxnet1": "conv128k5s2-conv128-incE0.4-gap",
    "sewrn_auxnet2": "conv128k5-conv128-gap-fc768",
    "sewrn_auxnet3": "conv128-conv128-incE0.4-gap",
    # WRN 28-10 and DenseNet-BC, CIFAR100 (supp. Table 9). AuxConv2 is read as 3x3-256 (AuxNet1 and AuxNet3),
    # AuxConv3 as two AuxInceptionE blocks of which the second has twice the channels of the first (the table's
    # footnote). Choice: widths 0.15 / 0.3 (AuxNet1) and 0.35 / 0.7 (AuxNet3), from Table 1 (WRN 28-10: 38.19M
    # with AuxNet1 alone, 43.25M with all three).
    "wrn_auxnet1": "conv128k5s2-conv128-conv256-incE0.15-incE0.3-gap",
    "wrn_auxnet2": "conv128k5-conv128-gap-fc768",
    "wrn_auxnet3": "conv128-conv128-conv256-incE0.35-incE0.7-gap",
    # ResNet-50, ImageNet (supp. Table 10). Reading of the merged cells: AuxNet1 = conv3x3-256/2, C, D, E;
    # AuxNet2 = C, D, E; AuxNet3 = C, E (all end on a 14x14 map). The paper gives no parameter count: choice of
    # half-width Inception blocks (about 7.3M in total).
    "imagenet_auxnet1": "conv256s2-incC0.5-incD0.5-incE0.5-gap",
    "imagenet_auxnet2": "incC0.5-incD0.5-incE0.5-gap",
    "imagenet_auxnet3": "incC0.5-incE0.5-gap",
}


class ConvBNReLU(Conv2dNormActivation):
    """Conv2d (no bias) + BatchNorm2d + ReLU, 'same' padding for odd kernels (torchvision's block)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 3, stride: int = 1) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        super().__init__(cin, cout, (kh, kw), stride, padding=(kh // 2, kw // 2), inplace=True)


def group_log_probs(logits: torch.Tensor, gamma: torch.Tensor, num_groups: int) -> torch.Tensor:
    """log P(group | x) = logsumexp of log_softmax(logits) over each group's members, shape (B, k).

    Exact in log space: each group's maximum is subtracted before ``exp``, so no group underflows to -inf.
    """
    logp = logits.float().log_softmax(-1)
    idx = gamma.to(logp.device).unsqueeze(0).expand(logp.shape[0], -1)
    gmax = logp.new_full((logp.shape[0], num_groups), -torch.inf).scatter_reduce(1, idx, logp, "amax")
    sums = logp.new_zeros(logp.shape[0], num_groups).scatter_add(1, idx, (logp - gmax.gather(1, idx)).exp())
    return sums.log() + gmax


class OutputGroups(nn.Module):
    """The head-less branch: group log-probabilities of f's own class logits (no parameters, no extra compute).

    Its cross-entropy against gamma(y) is a hierarchical loss on f's output (Bertinetto et al., "Making Better
    Mistakes", CVPR 2020); ``gamma`` is the owning branch's buffer, so regrouping changes it in place.
    """

    def __init__(self, num_groups: int) -> None:
        super().__init__()
        self.num_groups = int(num_groups)

    def forward(self, logits: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return group_log_probs(logits, gamma, self.num_groups)


class GlobalAvgPool(nn.Module):
    """Global average pooling to (B, C); a (B, C) input passes through unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) if x.dim() == 4 else x.flatten(1)


class ToMap(nn.Module):
    """A channels-last map (B, H, W, C) or patch tokens (B, P + H*W, D) as a map (B, C, H, W)."""

    def __init__(self, layout: Layout, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kind, self.prefix = layout.kind, layout.prefix
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "nhwc":
            return x.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            assert self.grid is not None
            x = x[:, self.prefix :]
            return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)
        return x

    def extra_repr(self) -> str:
        return f"from={self.kind}, prefix={self.prefix}, grid={self.grid}"


class ToTokens(nn.Module):
    """Any feature layout as tokens (B, N, D): maps are flattened over their positions, tokens pass unchanged."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.kind = layout.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return x.flatten(2).transpose(1, 2)
        if self.kind == "nhwc":
            return x.flatten(1, 2)
        return x

    def extra_repr(self) -> str:
        return f"from={self.kind}"


class TokenPool(nn.Module):
    """(B, N, D) -> (B, D): the mean of the tokens after the ``prefix`` ones, or the class token (``cls``)."""

    def __init__(self, mode: str = "mean", prefix: int = 0) -> None:
        super().__init__()
        self.mode, self.prefix = mode, prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.mode == "cls" else x[:, self.prefix :].mean(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, prefix={self.prefix}"


def _transformer_block(width: int, heads: int | None) -> nn.Module:
    if heads is None:
        heads = next(h for h in (8, 6, 4, 3, 2, 1) if width % h == 0 and (width // h >= 32 or h == 1))
    if width % heads:
        raise SSALError(f"head token tfm{heads}: the feature width {width} is not divisible by {heads} heads")
    return nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


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
    """Split and validate a head spec (or the name of one of ``AUXNETS``); returns its tokens."""
    spec = AUXNETS.get(spec, spec) if isinstance(spec, str) else spec
    tokens = spec.split("-") if isinstance(spec, str) else [str(t) for t in spec]
    tokens = [t.strip() for t in tokens if t.strip()]
    for t in tokens:
        if not (
            _CONV.match(t)
            or _INC.match(t)
            or _FC.match(t)
            or _DROP.match(t)
            or _TFM.match(t)
            or t in ("gap", "maxpool", "avgpool", "ln", "cls")
        ):
            raise SSALError(
                f"unknown head token {t!r}; use convC[kK][sS], incC|incD|incE[width], maxpool, avgpool, gap, fcN, "
                "dropP, or on tokens ln, tfm[H], cls; or a paper AuxNet name (ssal.heads.AUXNETS)"
            )
    return tokens


def _is_spatial(t: str) -> bool:
    return bool(_CONV.match(t) or _INC.match(t)) or t in ("maxpool", "avgpool")


def _is_token_op(t: str) -> bool:
    return bool(_TFM.match(t)) or t in ("ln", "cls")


def build_head(
    spec: str | Sequence[str],
    in_channels: int,
    num_outputs: int,
    layout: Layout | str = "nchw",
    grid: tuple[int, int] | None = None,
) -> nn.Sequential:
    """Build an auxiliary head from ``spec`` for features of width ``in_channels`` in ``layout``.

    ``nchw`` (the default) takes a 4-D feature map (B, C, H, W) or, if the spec has no spatial layers, a 2-D
    feature vector (B, C). Convolutional specs on ``nhwc`` maps or on tokens (whose patch ``grid`` must be known)
    start by laying the features out as (B, C, H, W); other specs on ``nhwc`` maps or tokens work on tokens.
    """
    lay = Layout.parse(layout)
    tokens = parse_head(spec)
    spatial = [t for t in tokens if _is_spatial(t)]
    token_ops = [t for t in tokens if _is_token_op(t)]
    if spatial and token_ops:
        raise SSALError(f"head {spec!r} mixes map layers ({spatial[0]}) and token layers ({token_ops[0]})")
    if spatial:
        if lay.kind == "vector":
            raise SSALError(f"head token {spatial[0]!r} needs a feature map but the attach point gives a vector")
        if lay.kind == "tokens" and grid is None:
            raise SSALError(
                f"head token {spatial[0]!r} needs a feature map, and these tokens do not form a square grid; "
                f"use a token head such as {DEFAULT_TOKEN_HEAD!r}"
            )
        pre = [] if lay.kind == "nchw" else [ToMap(lay, grid)]
        return nn.Sequential(*pre, *_build_map_head(tokens, in_channels, num_outputs))
    if token_ops or lay.kind in ("nhwc", "tokens"):
        if lay.kind == "vector":
            raise SSALError(f"head token {token_ops[0]!r} needs tokens or a map but the attach point gives a vector")
        return _build_token_head(tokens, in_channels, num_outputs, lay)
    return nn.Sequential(*_build_map_head(tokens, in_channels, num_outputs))


def _build_token_head(tokens: list[str], c: int, num_outputs: int, lay: Layout) -> nn.Sequential:
    layers: list[nn.Module] = [] if lay.kind == "tokens" else [ToTokens(lay)]
    prefix = lay.prefix if lay.kind == "tokens" else 0
    pooled = False
    for t in tokens:
        if pooled and (_is_token_op(t) or t == "gap"):
            raise SSALError(f"head token {t!r} needs tokens but comes after pooling")
        if t == "ln":
            layers.append(nn.LayerNorm(c))
        elif m := _TFM.match(t):
            layers.append(_transformer_block(c, int(m[1]) if m[1] else None))
        elif t in ("gap", "cls"):
            if t == "cls" and prefix == 0:
                raise SSALError(f"head token 'cls' needs a class token, but the layout is {lay}; use gap")
            layers.append(TokenPool("cls" if t == "cls" else "mean", prefix))
            pooled = True
        elif m := _FC.match(t):
            if not pooled:
                layers.append(TokenPool("mean", prefix))
                pooled = True
            layers += [nn.Linear(c, int(m[1])), nn.ReLU(inplace=True)]
            c = int(m[1])
        elif m := _DROP.match(t):
            layers.append(nn.Dropout(float(m[1])))
    if not pooled:
        layers.append(TokenPool("mean", prefix))
    layers.append(nn.Linear(c, num_outputs))
    return nn.Sequential(*layers)


def _build_map_head(tokens: list[str], in_channels: int, num_outputs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    c, pooled = in_channels, False
    for t in tokens:
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
    return layers
