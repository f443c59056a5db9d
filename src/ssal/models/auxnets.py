"""The paper's auxiliary networks (supplementary Sec. C, Tables 6-10) as head specs, and the SSAL branch
configurations of the paper's main results (paper Sec. 4.2-4.4).

A head spec is a string understood by ``ssal.heads.build_head``; the output FC with one unit per group is
always appended. Where the paper under-specifies a head (widths of the Inception-like blocks, hidden FC sizes),
the choice is documented next to the spec and in ``docs/parameters.md``; widths were tuned so that the
parameter counts match the paper's Tables 1-3 (see ``python -m ssal.models.params``).
"""

from __future__ import annotations

__all__ = [
    "RESNET18_CIFAR_G1",
    "RESNET18_CIFAR_G2",
    "RESNET18_CIFAR_SSAL",
]

# --- ResNet-18, CIFAR100 (paper Sec. 4.2 "Number of auxiliary classifiers", Table 1) ----------------
# "two convolutional layers with batch-normalization and ReLU followed by an inception-like layer, global
# average pooling and a linear output layer". Choice: the CIFAR AuxNet1/AuxNet2 convs of supp. Table 7/8
# (5x5 stride 2 on the 32x32 map of g1, 5x5 on the 16x16 map of g2) and an AuxInceptionE at 0.3 width.
RESNET18_CIFAR_G1 = "conv128k5s2-conv128-incE0.3-gap"
RESNET18_CIFAR_G2 = "conv128k5-conv128-incE0.3-gap"
#: The paper's branch g1 sits after the first residual stage (position alias g2 = ``layer1``, 20 groups), its
#: g2 after the second (position alias g3 = ``layer2``, 50 groups); Table 1's one-branch model is the first alone.
RESNET18_CIFAR_SSAL = (
    {"at": "g2", "k": 20, "head": RESNET18_CIFAR_G1},
    {"at": "g3", "k": 50, "head": RESNET18_CIFAR_G2},
)
