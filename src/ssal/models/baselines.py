"""The "NoSSAL" baselines of paper Sec. 4.3 (Table 2) and Table 4 (GC): the SSAL layout without the SSAL loss.

Both keep the auxiliary branches of an SSAL architecture but return one logits tensor, trained with plain
cross-entropy, so the branches get no group objective:

- ``GapCatNoSSAL``: the branch outputs are concatenated to the main classifier's GAP features, followed by
  one linear classifier (which replaces the original FC).
- ``CatFCNoSSAL``: the main logits and the branch outputs are concatenated and passed through an FC layer
  of 2048 units (with ReLU, so that the two layers do not collapse into one) and a linear classifier.

(The width-/depth-matched baselines WideResnet18, DeepResnet18 and DWRResnet18 live in ``resnet.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..architecture import SSALModel
from ..errors import SSALError
from . import auxnets as aux
from .registry import BranchConfig, build_branches, create_model, model_input_size, register_model, scale_groups

__all__ = [
    "BranchConcatNet",
    "catfc_nossal_resnet18_tiny",
    "gapcat_nossal_resnet18_tiny",
    "gapcat_nossal_resnet50_imagenet",
    "nossal_model",
]

Mode = Literal["gapcat", "catfc"]


class BranchConcatNet(nn.Module):
    """An SSAL architecture whose branch outputs feed the final classifier (paper Sec. 4.3, *NoSSAL).

    Args:
        net: an ``SSALModel`` whose backbone has a linear ``fc`` classifier on GAP features.
        mode: ``"gapcat"`` (GapCatNoSSAL) or ``"catfc"`` (CatFCNoSSAL).
        hidden: width of the hidden FC of CatFCNoSSAL (2048 in the paper).
        group_counts: k of every branch (default: read from the branches' class-to-group maps).

    The backbone's positions stay available as ``ssal_positions`` (prefixed with ``net.backbone.``).
    """

    def __init__(
        self, net: SSALModel, mode: Mode, hidden: int = 2048, group_counts: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if mode not in ("gapcat", "catfc"):
            raise SSALError(f"mode must be 'gapcat' or 'catfc', got {mode!r}")
        fc = getattr(net.backbone, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise SSALError("a *NoSSAL baseline needs a backbone with a linear `fc` classifier")
        self.mode = mode
        self.net = net
        groups = sum(group_counts) if group_counts is not None else sum(b.num_groups for b in net.branches)
        C = fc.out_features
        if mode == "gapcat":
            net.backbone.fc = nn.Identity()  # the backbone now returns its GAP features (B, F)
            self.classifier: nn.Module = nn.Linear(fc.in_features + groups, C)
        else:
            self.classifier = nn.Sequential(nn.Linear(C + groups, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, C))
        positions = getattr(net.backbone, "ssal_positions", {}) or {}
        self.ssal_positions = {a: f"net.backbone.{m}" for a, m in positions.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x, with_branches=True)  # main: GAP features (gapcat) or logits (catfc)
        return self.classifier(torch.cat([out.main, *out.aux], 1))


def nossal_model(
    base: str, num_classes: int, branches: Sequence[BranchConfig], mode: Mode, hidden: int = 2048
) -> BranchConcatNet:
    """Build a *NoSSAL baseline from a registered backbone and SSAL branch configs (group counts give widths)."""
    backbone = create_model(base, num_classes)
    built = build_branches(base, num_classes, branches)
    net = SSALModel(backbone, built, input_size=model_input_size(base))
    return BranchConcatNet(net, mode, hidden, [b.grouping.k for b in built])


def _scaled(configs: Sequence[BranchConfig], num_classes: int, paper_num_classes: int) -> list[dict]:
    return [{**c, "k": scale_groups(c["k"], num_classes, paper_num_classes)} for c in configs]


@register_model("gapcat_nossal_resnet18_tiny", input_size=(3, 64, 64), paper_num_classes=200)
def gapcat_nossal_resnet18_tiny(num_classes: int) -> nn.Module:
    """GapCatNoSSAL (paper Sec. 4.3, Table 2): the "SSAL x3" ``resnet18_tiny`` layout, branch outputs
    concatenated to the GAP features, one linear classifier, no SSAL loss."""
    return nossal_model("resnet18_tiny", num_classes, _scaled(aux.TINY_SSAL_X3, num_classes, 200), "gapcat")


@register_model("catfc_nossal_resnet18_tiny", input_size=(3, 64, 64), paper_num_classes=200)
def catfc_nossal_resnet18_tiny(num_classes: int) -> nn.Module:
    """CatFCNoSSAL (paper Sec. 4.3, Table 2): the "SSAL x1" ``resnet18_tiny`` layout, main logits and branch
    output concatenated, FC-2048 + ReLU, linear classifier, no SSAL loss."""
    return nossal_model("resnet18_tiny", num_classes, _scaled(aux.TINY_SSAL_X1, num_classes, 200), "catfc")


@register_model("gapcat_nossal_resnet50_imagenet", input_size=(3, 224, 224), paper_num_classes=1000)
def gapcat_nossal_resnet50_imagenet(num_classes: int) -> nn.Module:
    """GapCatNoSSAL on ImageNet (paper Table 4, "GC"): the paper's SSAL ``resnet50_imagenet`` layout without
    the SSAL loss, branch outputs concatenated to the GAP features."""
    configs = _scaled(aux.RESNET50_IMAGENET_SSAL, num_classes, 1000)
    return nossal_model("resnet50_imagenet", num_classes, configs, "gapcat")
