"""Weight initialisation shared by the backbones."""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal (fan-out) convolutions, BN at weight 1 / bias 0, zero linear biases; returns ``model``.

    The initialisation of He et al. 2015, used by the reference ResNet, WRN and DenseNet implementations
    (PyTorch's default conv init is uniform with a = sqrt(5), about 1/sqrt(3) of this scale).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
