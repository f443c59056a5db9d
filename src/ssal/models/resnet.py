"""ResNets of the paper (supplementary Sec. B): CIFAR ResNet-18/50, Tiny ImageNet ResNet-18, ImageNet ResNet-50.

Every backbone exposes ``stem``, ``layer1`` .. ``layer4`` and ``fc`` and maps the paper's attachment points
(paper Fig. 4, Sec. 4.2) to module names in ``ssal_positions``: ``g1`` = after the stem (for stems with a
max-pool: after the first max-pooling, before the first residual block), ``g{i+1}`` = after residual stage i.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from ..heads import ConvBNReLU
from . import auxnets as aux
from .init import init_weights
from .registry import register_model

__all__ = [
    "BasicBlock",
    "PreActBlock",
    "PreActBottleneck",
    "ResNet",
    "conv_stem",
    "deep_resnet18_tiny",
    "dwr_resnet18_tiny",
    "resnet18_cifar",
    "resnet18_tiny",
    "resnet50_cifar",
    "resnet50_imagenet",
    "resnet_positions",
    "wide_resnet18_tiny",
]


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


def resnet_positions(stem: str = "stem", layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4")) -> dict:
    """The paper's g1, g2, ... for a ResNet: g1 after the stem, g{i+1} after residual stage i."""
    return {f"g{i + 1}": name for i, name in enumerate([stem, *layers])}


class BasicBlock(nn.Module):
    """Original (post-activation) residual block: conv-BN-ReLU-conv-BN, add, ReLU (He et al. 2016)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != width:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Full pre-activation residual block BN-ReLU-conv x2 (He et al., "Identity mappings", 2016).

    ``preact=False`` drops the first BN-ReLU, for a first block that follows a stem ending in BN-ReLU.
    """

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, preact: bool = True) -> None:
        super().__init__()
        self.pre = _bn_relu(cin) if preact else nn.Identity()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.act = _bn_relu(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != width:
            self.shortcut = nn.Conv2d(cin, width, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)  # the projection shortcut sees the pre-activated input
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.conv2(self.act(self.conv1(a))) + skip


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck 1x1 (w) - 3x3 (w) - 1x1 (4w), each preceded by BN-ReLU."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = 4 * width
        self.pre = _bn_relu(cin)
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.act1 = _bn_relu(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.act2 = _bn_relu(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(a))))) + skip


class ResNet(nn.Module):
    """A four-stage ResNet: ``stem`` -> ``layer1..4`` -> (BN-ReLU if pre-activation) -> GAP -> ``fc``.

    Args:
        block: ``BasicBlock``, ``PreActBlock`` or ``PreActBottleneck``.
        depths: blocks per stage; widths: base width per stage; strides: stride of each stage's first block.
        stem: the input stem; stem_channels: its output channels.
        first_preact: ``False`` if the stem already ends in BN-ReLU (pre-activation blocks only): the first
            block then skips its own pre-activation, as in He et al.'s pre-activation ImageNet ResNets.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[PreActBlock] | type[PreActBottleneck],
        depths: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        stem: nn.Module,
        stem_channels: int,
        first_preact: bool = True,
    ) -> None:
        super().__init__()
        self.stem = stem
        cin = stem_channels
        for i, (d, w, s) in enumerate(zip(depths, widths, strides, strict=True)):
            blocks = []
            for j in range(d):
                skip_preact = not first_preact and i == 0 and j == 0
                blocks.append(block(cin, w, s if j == 0 else 1, **({"preact": False} if skip_preact else {})))
                cin = w * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.post = _bn_relu(cin) if block is not BasicBlock else nn.Identity()
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.ssal_positions = resnet_positions()
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features before global pooling, (B, F, H', W')."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.post(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))


def conv_stem(cin: int, cout: int, kernel: int, stride: int = 1, maxpool: bool = False) -> nn.Sequential:
    """conv-BN-ReLU stem, optionally followed by a 3x3/2 max-pool."""
    layers: list[nn.Module] = [ConvBNReLU(cin, cout, kernel, stride)]
    if maxpool:
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


# --- registered builders -----------------------------------------------------------------------------
@register_model("resnet18_cifar", input_size=(3, 32, 32), paper_ssal=aux.RESNET18_CIFAR_SSAL, paper_num_classes=100)
def resnet18_cifar(num_classes: int) -> nn.Module:
    """ResNet-18 for 32x32 inputs (paper Table 1): 3x3 stem without down-sampling, post-activation blocks.

    Positions: g1 = ``stem``, g2..g5 = ``layer1``..``layer4`` (after residual stages 1-4).
    Paper SSAL: 20 groups at g2 and 50 groups at g3 (paper Sec. 4.2).
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), (1, 2, 2, 2), num_classes, conv_stem(3, 64, 3), 64)


def _tiny_stem(width: int, extra: int = 0, extra_width: int = 256) -> tuple[nn.Sequential, int]:
    """7x7/2 conv-BN-ReLU, 3x3/2 max-pool, then ``extra`` conv-BN-ReLU layers (DeepResnet18, paper Sec. 4.3)."""
    layers = list(conv_stem(3, width, 7, 2, maxpool=True))
    c = width
    for _ in range(extra):
        layers.append(ConvBNReLU(c, extra_width, 3))
        c = extra_width
    return nn.Sequential(*layers), c


def _resnet18_tiny(num_classes: int, width: int = 64, extra: int = 0, extra_width: int = 256) -> ResNet:
    stem, c = _tiny_stem(width, extra, extra_width)
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet(PreActBlock, (2, 2, 2, 2), widths, (1, 2, 2, 2), num_classes, stem, c, first_preact=False)


@register_model("resnet18_tiny", input_size=(3, 64, 64), paper_ssal=aux.TINY_SSAL_X3, paper_num_classes=200)
def resnet18_tiny(num_classes: int) -> nn.Module:
    """ResNet-18 for Tiny ImageNet (supp. Table 1): 7x7/2 stem, 3x3/2 max-pool, pre-activation blocks.

    Positions: g1 = ``stem`` (after the first max-pooling, before the first residual block, 64 x 16 x 16),
    g2..g5 = ``layer1``..``layer4``. Paper SSAL ("SSAL x3" of Table 2): AuxNet1 at g1 and g2, AuxNet2 at g3
    (40/67/100 groups); "SSAL x1" is AuxNet1 at g2 alone (``auxnets.TINY_SSAL_X1``).
    """
    return _resnet18_tiny(num_classes)


@register_model("wide_resnet18_tiny", input_size=(3, 64, 64), paper_num_classes=200)
def wide_resnet18_tiny(num_classes: int) -> nn.Module:
    """WideResnet18 baseline (paper Sec. 4.3, Table 2): ``resnet18_tiny`` with 50% more filters in every conv."""
    return _resnet18_tiny(num_classes, width=96)


@register_model("deep_resnet18_tiny", input_size=(3, 64, 64), paper_num_classes=200)
def deep_resnet18_tiny(num_classes: int) -> nn.Module:
    """DeepResnet18 baseline (paper Sec. 4.3): four conv-BN-ReLU layers of 256 filters before the first
    residual block (inside ``stem``, after the max-pool); the first block projects 256 -> 64 channels."""
    return _resnet18_tiny(num_classes, extra=4, extra_width=256)


@register_model("dwr_resnet18_tiny", input_size=(3, 64, 64), paper_num_classes=200)
def dwr_resnet18_tiny(num_classes: int) -> nn.Module:
    """DWRResnet18 baseline (paper Sec. 4.3): DeepResnet18 with 512 filters in the four added layers."""
    return _resnet18_tiny(num_classes, extra=4, extra_width=512)


@register_model("resnet50_cifar", input_size=(3, 32, 32), paper_ssal=aux.RESNET50_CIFAR_SSAL, paper_num_classes=100)
def resnet50_cifar(num_classes: int) -> nn.Module:
    """Pre-activation bottleneck ResNet-50 for CIFAR100 (supp. Table 2): 5x5 stem of 64 filters without
    down-sampling, stages of 3/4/6/3 blocks (stride 2 in stages 2 and 3 only: 32, 16, 8, 8).

    Positions: g1 = ``stem``, g2..g5 = ``layer1``..``layer4``. Paper SSAL (supp. Table 7): AuxNet1 at g2
    (20 groups), AuxNet2 at g3 (33), AuxNet3 at g4 (50).
    """
    stem = nn.Conv2d(3, 64, 5, padding=2, bias=False)  # the first pre-activation block normalises it
    return ResNet(PreActBottleneck, (3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 1), num_classes, stem, 64)


@register_model(
    "resnet50_imagenet", input_size=(3, 224, 224), paper_ssal=aux.RESNET50_IMAGENET_SSAL, paper_num_classes=1000
)
def resnet50_imagenet(num_classes: int) -> nn.Module:
    """ImageNet ResNet-50, torchvision's definition (supp. Table 5; conv-BN-ReLU order), randomly initialised.

    Positions: g1 = ``maxpool`` (after the first max-pooling), g2..g5 = ``layer1``..``layer4``.
    Paper SSAL (supp. Table 10): AuxNet1 at g2 (200 groups), AuxNet2 at g3 (334), AuxNet3 at g4 (500).
    """
    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    model.ssal_positions = resnet_positions("maxpool")
    return model
