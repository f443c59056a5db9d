"""ssal: Self-Supervised Autogenous Learning (Palacio et al., ICPR 2020) for any PyTorch classifier."""

from .architecture import Branch, SSALModel, SSALOutput
from .errors import SSALError
from .features import Layout
from .grouping import Grouping, group_from_confusion, group_from_superclasses, random_grouping
from .heads import DEFAULT_HEAD, DEFAULT_TOKEN_HEAD, build_head
from .loss import LossParts, SSALLoss
from .prediction import (
    LinearCombination,
    SSALMetrics,
    fit_linear_combination,
    joint_log_probs,
    joint_probability,
    main_probability,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_HEAD",
    "DEFAULT_TOKEN_HEAD",
    "Branch",
    "Grouping",
    "Layout",
    "LinearCombination",
    "LossParts",
    "SSALError",
    "SSALLoss",
    "SSALMetrics",
    "SSALModel",
    "SSALOutput",
    "build_head",
    "fit_linear_combination",
    "group_from_confusion",
    "group_from_superclasses",
    "joint_log_probs",
    "joint_probability",
    "main_probability",
    "random_grouping",
]
