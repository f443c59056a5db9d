"""The paper's auxiliary networks (supplementary Sec. C, Tables 6-10) as head specs, and the SSAL branch
configurations of the paper's main results (paper Sec. 4.2-4.4).

A head spec is a string understood by ``ssal.heads.build_head``; the output FC with one unit per group is
always appended. ``incE0.3`` is an AuxInceptionE block (supp. Fig. 1c) with every Inception-v3 width scaled by
0.3. Where the paper under-specifies a head (widths of the Inception-like blocks, a hidden FC), the choice is
written next to the spec and in ``docs/parameters.md``; widths were tuned so that the parameter counts match the
paper's Tables 1-3 (``python -m ssal.models.params``).

A branch configuration is a dict ``{"at": position alias, "k": groups, "head": spec}``; positions are the
``ssal_positions`` aliases of each backbone (paper Fig. 4, see the backbones' docstrings). Group counts follow
Sec. 4.4: C/5, C/3, C/2 (20/33/50 on CIFAR100, 200/334/500 on ImageNet; 40/67/100 chosen for Tiny ImageNet).
"""

from __future__ import annotations

__all__ = [
    "DENSENET_SSAL",
    "IMAGENET_AUXNET1",
    "IMAGENET_AUXNET2",
    "IMAGENET_AUXNET3",
    "RESNET18_CIFAR_G1",
    "RESNET18_CIFAR_G2",
    "RESNET18_CIFAR_SSAL",
    "RESNET50_CIFAR_AUXNET1",
    "RESNET50_CIFAR_AUXNET2",
    "RESNET50_CIFAR_AUXNET3",
    "RESNET50_CIFAR_SSAL",
    "RESNET50_IMAGENET_SSAL",
    "SEWRN_AUXNET1",
    "SEWRN_AUXNET2",
    "SEWRN_AUXNET3",
    "SEWRN_SSAL",
    "TINY_AUXNET1",
    "TINY_AUXNET2",
    "TINY_SSAL_X1",
    "TINY_SSAL_X3",
    "WRN_AUXNET1",
    "WRN_AUXNET2",
    "WRN_AUXNET3",
    "WRN_SSAL",
]

# --- Tiny ImageNet ResNet-18 (supp. Table 6; paper Sec. 4.2, Table 2) --------------------------------------
# Exactly as in the table: 2x conv3x3-128, 2x conv3x3-256, GAP, FC-256 (AuxNet1); AuxNet2 drops the 128 convs.
TINY_AUXNET1 = "conv128-conv128-conv256-conv256-gap-fc256"
TINY_AUXNET2 = "conv256-conv256-gap-fc256"
#: "SSAL x1" of Table 2: one branch after the first residual block (g2).
TINY_SSAL_X1 = ({"at": "g2", "k": 40, "head": TINY_AUXNET1},)
#: "SSAL x3" of Table 2: g1 and g2 with AuxNet1 (supp. Table 6), g3 with AuxNet2.
TINY_SSAL_X3 = (
    {"at": "g1", "k": 40, "head": TINY_AUXNET1},
    {"at": "g2", "k": 67, "head": TINY_AUXNET1},
    {"at": "g3", "k": 100, "head": TINY_AUXNET2},
)

# --- ResNet-18, CIFAR100 (paper Sec. 4.2 "Number of auxiliary classifiers", Table 1) ----------------------
# "two convolutional layers with batch-normalization and ReLU followed by an inception-like layer, global
# average pooling and a linear output layer". Choice: the CIFAR AuxNet1/AuxNet2 convs of supp. Table 7/8
# (5x5 stride 2 on the 32x32 map, 5x5 on the 16x16 map) and an AuxInceptionE at 0.3 width.
RESNET18_CIFAR_G1 = "conv128k5s2-conv128-incE0.3-gap"
RESNET18_CIFAR_G2 = "conv128k5-conv128-incE0.3-gap"
#: The paper's branch g1 sits after the first residual stage (position alias g2 = ``layer1``, 20 groups), its
#: g2 after the second (position alias g3 = ``layer2``, 50 groups); Table 1's one-branch model is the first alone.
RESNET18_CIFAR_SSAL = (
    {"at": "g2", "k": 20, "head": RESNET18_CIFAR_G1},
    {"at": "g3", "k": 50, "head": RESNET18_CIFAR_G2},
)

# --- ResNet-50, CIFAR100 (supp. Table 7) ---------------------------------------------------------------------
# Reading of the merged table cells: AuxConv2 (3x3-128) and AuxConv3 (AuxInceptionE) are shared by all three.
# Choice: AuxInceptionE width 0.3 (Table 1: 25.07M with one branch, 28.89M with three).
RESNET50_CIFAR_AUXNET1 = "conv128k5s2-conv128-incE0.3-gap"
RESNET50_CIFAR_AUXNET2 = "conv128k5-conv128-incE0.3-gap"
RESNET50_CIFAR_AUXNET3 = "conv128-conv128-incE0.3-gap"
RESNET50_CIFAR_SSAL = (
    {"at": "g2", "k": 20, "head": RESNET50_CIFAR_AUXNET1},
    {"at": "g3", "k": 33, "head": RESNET50_CIFAR_AUXNET2},
    {"at": "g4", "k": 50, "head": RESNET50_CIFAR_AUXNET3},
)

# --- SE-WRN 16-8, CIFAR100 (supp. Table 8) -------------------------------------------------------------------
# Positions are not given for WRN 16-8: the WRN 28-10 ones (g2, g5, g6) are used.
# Choice: AuxInceptionE width 0.4 (Table 3: 14.9M).
SEWRN_AUXNET1 = "conv128k5s2-conv128-incE0.4-gap"
SEWRN_AUXNET2 = "conv128k5-conv128-gap-fc768"
SEWRN_AUXNET3 = "conv128-conv128-incE0.4-gap"
SEWRN_SSAL = (
    {"at": "g2", "k": 20, "head": SEWRN_AUXNET1},
    {"at": "g5", "k": 33, "head": SEWRN_AUXNET2},
    {"at": "g6", "k": 50, "head": SEWRN_AUXNET3},
)

# --- WRN 28-10 and DenseNet-BC, CIFAR100 (supp. Table 9) -----------------------------------------------------
# AuxConv2 is read as 3x3-256 (AuxNet1 and AuxNet3), AuxConv3 as two AuxInceptionE blocks of which the second
# has twice the channels of the first (the table's footnote). Choice: widths 0.15 / 0.3 (AuxNet1) and
# 0.35 / 0.7 (AuxNet3), from Table 1 (WRN 28-10: 38.19M with AuxNet1 alone, 43.25M with all three).
WRN_AUXNET1 = "conv128k5s2-conv128-conv256-incE0.15-incE0.3-gap"
WRN_AUXNET2 = "conv128k5-conv128-gap-fc768"
WRN_AUXNET3 = "conv128-conv128-conv256-incE0.35-incE0.7-gap"
WRN_SSAL = (
    {"at": "g2", "k": 20, "head": WRN_AUXNET1},
    {"at": "g5", "k": 33, "head": WRN_AUXNET2},
    {"at": "g6", "k": 50, "head": WRN_AUXNET3},
)
DENSENET_SSAL = WRN_SSAL

# --- ResNet-50, ImageNet (supp. Table 10) --------------------------------------------------------------------
# Reading of the merged cells: AuxNet1 = conv3x3-256/2, C, D, E; AuxNet2 = C, D, E; AuxNet3 = C, E (all end on a
# 14x14 map). The paper gives no parameter count: choice of half-width Inception blocks (about 7.3M in total).
IMAGENET_AUXNET1 = "conv256s2-incC0.5-incD0.5-incE0.5-gap"
IMAGENET_AUXNET2 = "incC0.5-incD0.5-incE0.5-gap"
IMAGENET_AUXNET3 = "incC0.5-incE0.5-gap"
RESNET50_IMAGENET_SSAL = (
    {"at": "g2", "k": 200, "head": IMAGENET_AUXNET1},
    {"at": "g3", "k": 334, "head": IMAGENET_AUXNET2},
    {"at": "g4", "k": 500, "head": IMAGENET_AUXNET3},
)
