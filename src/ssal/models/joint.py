"""Supplementary E.1: the joint prediction wired into a single output ("alternative joint predictions").

One SSAL branch is attached as usual, but instead of two outputs trained with the SSAL loss, the network
returns the joint log-probability of paper Sec. 3.4 as its only output,
``log P(y|x) = log_softmax(f)_y + eta * log_softmax(g)_{gamma(y)}`` (renormalised over y), and is trained as a
regular network with plain cross-entropy on it. The grouping is then expressed only by the wiring.
"""

from __future__ import annotations

import torch
from torch import nn

from ..architecture import SSALModel
from ..errors import SSALError
from ..grouping import Grouping
from ..prediction import joint_log_probs, validate_eta
from . import auxnets as aux
from .registry import build_branches, create_model, model_input_size, register_model, scale_groups

__all__ = ["JointOutputNet", "wrn28_10_joint"]


class JointOutputNet(nn.Module):
    """A single-output network whose output is the joint log-probability of its SSAL branches (supp. E.1).

    The output (B, C) are normalised log-probabilities, valid logits for ``nn.CrossEntropyLoss``.
    ``net`` is the underlying ``SSALModel`` (use it to read ``gammas`` or the separate outputs).
    """

    def __init__(self, net: SSALModel, eta: float = 1.0) -> None:
        super().__init__()
        if len(net.branches) == 0:
            raise SSALError("a joint-output network needs at least one SSAL branch")
        self.net = net
        self.eta = validate_eta(eta, len(net.branches))
        positions = getattr(net.backbone, "ssal_positions", {}) or {}
        self.ssal_positions = {a: f"net.backbone.{m}" for a, m in positions.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return joint_log_probs(self.net(x), self.net.gammas, self.eta)


@register_model("wrn28_10_joint", input_size=(3, 32, 32), paper_num_classes=100)
def wrn28_10_joint(
    num_classes: int,
    k: int | None = None,
    grouping: Grouping | None = None,
    at: str = "g2",
    head: str = aux.WRN_AUXNET1,
    eta: float = 1.0,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN 28-10 with one SSAL branch wired into a single joint output (supp. E.1).

    Defaults: the one-branch WRN 28-10 of paper Table 1 (AuxNet1 of supp. Table 9 at g2, 20 groups for
    C = 100, C / 5 otherwise). Pass ``grouping`` (e.g. from ``ssal group``; its k wins) to use a real grouping
    instead of a random placeholder.
    """
    backbone = create_model("wrn28_10", num_classes, dropout=dropout)
    k = scale_groups(20, num_classes, 100) if k is None else int(k)
    config = [{"at": at, "k": k, "head": head}]
    branches = build_branches("wrn28_10", num_classes, config, None if grouping is None else [grouping])
    return JointOutputNet(SSALModel(backbone, branches, input_size=model_input_size("wrn28_10")), eta)
