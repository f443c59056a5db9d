"""The paper's architectures (supplementary Sec. B, C) behind one registry: ``create_model(name, num_classes)``.

Importing this package registers every model; ``list_models()`` lists them.
"""

from __future__ import annotations

from . import baselines, densenet, fast, joint, resnet, small, wide_resnet  # noqa: F401  (register the models)
from .registry import (
    ModelEntry,
    create_model,
    list_models,
    model_entry,
    model_input_size,
    paper_branches,
    register_model,
)

__all__ = [
    "ModelEntry",
    "create_model",
    "list_models",
    "model_entry",
    "model_input_size",
    "paper_branches",
    "register_model",
]
