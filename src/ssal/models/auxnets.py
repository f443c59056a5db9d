"""The SSAL branch configurations of the paper's main results (paper Sec. 4.2-4.4, supplementary Sec. C).

A branch configuration is a dict ``{"at": position alias, "k": groups, "head": spec}``; positions are the
``ssal_positions`` aliases of each backbone (paper Fig. 4, see the backbones' docstrings), heads are the paper's
auxiliary networks ``ssal.heads.AUXNETS`` (where the choices made for each are written). Group counts follow
Sec. 4.4: C/5, C/3, C/2 (20/33/50 on CIFAR100, 200/334/500 on ImageNet; 40/67/100 chosen for Tiny ImageNet).
"""

from __future__ import annotations

from ..heads import AUXNETS

__all__ = [
    "DENSENET_SSAL",
    "RESNET18_CIFAR_SSAL",
    "RESNET50_CIFAR_SSAL",
    "RESNET50_IMAGENET_SSAL",
    "SEWRN_SSAL",
    "TINY_SSAL_X1",
    "TINY_SSAL_X3",
    "WRN_AUXNET1",
    "WRN_SSAL",
]


def _branches(*rows: tuple[str, int, str]) -> tuple[dict, ...]:
    return tuple({"at": at, "k": k, "head": AUXNETS[head]} for at, k, head in rows)


#: Tiny ImageNet ResNet-18, "SSAL x1" of Table 2: one branch after the first residual block (g2).
TINY_SSAL_X1 = _branches(("g2", 40, "tiny_auxnet1"))
#: "SSAL x3" of Table 2: g1 and g2 with AuxNet1 (supp. Table 6), g3 with AuxNet2.
TINY_SSAL_X3 = _branches(("g1", 40, "tiny_auxnet1"), ("g2", 67, "tiny_auxnet1"), ("g3", 100, "tiny_auxnet2"))
#: ResNet-18, CIFAR100 (Table 1): the paper's g1 sits after the first residual stage (position alias g2 =
#: ``layer1``, 20 groups), its g2 after the second (alias g3 = ``layer2``, 50 groups); the one-branch model is
#: the first alone.
RESNET18_CIFAR_SSAL = _branches(("g2", 20, "resnet18_cifar_g1"), ("g3", 50, "resnet18_cifar_g2"))
#: ResNet-50, CIFAR100 (supp. Table 7).
RESNET50_CIFAR_SSAL = _branches(
    ("g2", 20, "resnet50_cifar_auxnet1"), ("g3", 33, "resnet50_cifar_auxnet2"), ("g4", 50, "resnet50_cifar_auxnet3")
)
#: SE-WRN 16-8, CIFAR100 (supp. Table 8). Positions are not given for WRN 16-8: the WRN 28-10 ones (g2, g5, g6).
SEWRN_SSAL = _branches(("g2", 20, "sewrn_auxnet1"), ("g5", 33, "sewrn_auxnet2"), ("g6", 50, "sewrn_auxnet3"))
#: WRN 28-10 and DenseNet-BC, CIFAR100 (supp. Table 9).
WRN_SSAL = _branches(("g2", 20, "wrn_auxnet1"), ("g5", 33, "wrn_auxnet2"), ("g6", 50, "wrn_auxnet3"))
WRN_AUXNET1 = AUXNETS["wrn_auxnet1"]
DENSENET_SSAL = WRN_SSAL
#: ResNet-50, ImageNet (supp. Table 10).
RESNET50_IMAGENET_SSAL = _branches(
    ("g2", 200, "imagenet_auxnet1"), ("g3", 334, "imagenet_auxnet2"), ("g4", 500, "imagenet_auxnet3")
)
