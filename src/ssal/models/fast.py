"""A fast CIFAR backbone for time-to-accuracy runs on small hardware (not from the paper).

Layout after the airbench CIFAR speed-run nets: a small stem, then three blocks of
conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, global max pooling and a scaled linear classifier.
About 2M parameters at the default widths; it trains at several hundred img/s on a 2-core bf16 CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

__all__ = ["FastNet", "fastnet_cifar"]


def _conv_bn(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return [*layers, nn.BatchNorm2d(cout, momentum=0.4), nn.GELU()]


class FastBlock(nn.Sequential):
    """conv3x3 -> max-pool /2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn(cin, cout, pool=True), *_conv_bn(cout, cout, pool=False))


class FastNet(nn.Module):
    """Stem (2x2 conv, no padding) and three ``FastBlock`` stages; logits scaled by ``logit_scale``.

    Attachment points (``ssal_positions``): ``g1`` = ``layer1`` (w1 x 15 x 15 at 32 px input),
    ``g2`` = ``layer2`` (w2 x 7 x 7), ``g3`` = ``layer3`` (w3 x 3 x 3).
    """

    def __init__(
        self, num_classes: int, widths: tuple[int, int, int, int] = (24, 64, 256, 256), logit_scale: float = 1 / 9
    ) -> None:
        super().__init__()
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 2, bias=False), nn.BatchNorm2d(w0, momentum=0.4), nn.GELU())
        self.layer1, self.layer2, self.layer3 = FastBlock(w0, w1), FastBlock(w1, w2), FastBlock(w2, w3)
        self.fc = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = float(logit_scale)
        self.ssal_positions = {"g1": "layer1", "g2": "layer2", "g3": "layer3"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, w3, H/8, W/8)
        return self.logit_scale * self.fc(x.amax((2, 3)))


@register_model(
    "fastnet_cifar",
    input_size=(3, 32, 32),
    paper_ssal=[{"at": "g2", "k": 20, "head": "conv128-gap"}],
    paper_num_classes=100,
)
def fastnet_cifar(
    num_classes: int, widths: tuple[int, int, int, int] = (24, 64, 256, 256), logit_scale: float = 1 / 9
) -> nn.Module:
    """The fast airbench-like CIFAR net; its default SSAL branch (``ssal="paper"``) is one light head at g2."""
    return FastNet(num_classes, tuple(widths), logit_scale)  # type: ignore[arg-type]
