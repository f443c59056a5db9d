"""ssal: Self-Supervised Autogenous Learning (Palacio et al., ICPR 2020) for any PyTorch classifier."""

from typing import TYPE_CHECKING, Any

from .errors import SSALError

#: Public names and the module that defines each. They are imported on first use, so that commands which
#: do not need torch (``ssal group``) start without loading it.
_LAZY = {
    "Branch": "architecture",
    "SSALModel": "architecture",
    "SSALOutput": "architecture",
    "Grouping": "grouping",
    "group_from_confusion": "grouping",
    "group_from_superclasses": "grouping",
    "random_grouping": "grouping",
    "DEFAULT_HEAD": "heads",
    "DEFAULT_TOKEN_HEAD": "heads",
    "build_head": "heads",
    "Layout": "features",
    "LossParts": "loss",
    "SSALLoss": "loss",
    "LinearCombination": "prediction",
    "SSALMetrics": "prediction",
    "fit_linear_combination": "prediction",
    "joint_log_probs": "prediction",
    "joint_probability": "prediction",
    "main_probability": "prediction",
}

if TYPE_CHECKING:
    from .architecture import Branch, SSALModel, SSALOutput
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


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, as ``ssal.models``) on first use."""
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


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
