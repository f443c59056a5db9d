"""What ``ssal models`` prints: the models one can name, and the attach points of one model.

``attach_points(name)`` builds the model, runs one probe batch and reports, for each module, its output shape,
feature layout (``ssal.features``), reduction (input side / feature side) and its paper-style alias g1..gN.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..architecture import probe_shapes
from ..errors import SSALError
from ..features import AmbiguousLayoutError, declared_layouts, default_positions, infer_layout, prefix_tokens_hint

__all__ = ["AttachPoint", "attach_points", "format_attach_points", "model_names"]


@dataclass
class AttachPoint:
    """One module of a backbone as a place for a branch."""

    name: str
    shape: tuple[int, ...]  # output shape without the batch dimension
    layout: str  # nchw / nhwc / tokens... / vector, or "?" when it must be stated
    source: str  # stated / model / probe, or the reason it is unknown
    reduction: int | None  # input side / feature side
    alias: str = ""


def model_names(pattern: str | None = None) -> dict[str, list[str]]:
    """The names ``model.name`` accepts, by source (registered, torchvision, timm), optionally filtered.

    ``pattern`` is a shell pattern (``timm:vit*``, ``*resnet*``) matched against the full names.
    """
    from .registry import list_models
    from .zoo import list_zoo_models

    out = {
        "registered": list_models(),
        "torchvision": [f"torchvision:{n}" for n in list_zoo_models("torchvision")],
        "timm": [f"timm:{n}" for n in list_zoo_models("timm")],
    }
    if pattern:
        out = {k: [n for n in v if fnmatch.fnmatch(n, pattern)] for k, v in out.items()}
    return out


def attach_points(
    name: str,
    num_classes: int = 10,
    input_size: int | None = None,
    options: Mapping[str, Any] | None = None,
    depth: int | None = 2,
) -> tuple[list[AttachPoint], tuple[int, int, int]]:
    """The attach points of model ``name`` (modules up to ``depth`` levels, all with ``None``) and its input size.

    The model is built without pretrained weights; positions g1..gN and every module they point to are always
    listed.
    """
    from .registry import create_model, model_input_size

    options = dict(options or {})
    size = (3, int(input_size), int(input_size)) if input_size else model_input_size(name, options)
    backbone = create_model(name, num_classes, **options)
    aliases = default_positions(backbone)
    by_module = {m: a for a, m in aliases.items()}
    declared, prefix = declared_layouts(backbone), prefix_tokens_hint(backbone)
    names = [n for n, _ in backbone.named_modules() if n and (depth is None or n.count(".") < depth or n in by_module)]
    shapes = _probe_shapes(backbone, names, size)
    if shapes is None:
        raise SSALError(f"{name} failed on an input of size {size}; try --input-size")
    alt: dict[str, tuple[int, ...]] | None = None
    out = []
    for n in names:
        if n not in shapes:
            continue
        shape = shapes[n]
        try:
            try:
                lay, src = infer_layout(shape, n, None, declared.get(n), prefix, size[1:])
            except AmbiguousLayoutError:
                if alt is None:
                    alt = _probe_shapes(backbone, names, (size[0], 2 * size[1], 2 * size[2])) or {}
                lay, src = infer_layout(shape, n, None, declared.get(n), prefix, size[1:], alt.get(n))
            layout, grid = str(lay), lay.grid(shape)
        except SSALError:
            layout, src, grid = "?", "state it (layout:)", None
        red = size[1] // grid[0] if grid and grid[0] else None
        out.append(AttachPoint(n, shape[1:], layout, src, red, by_module.get(n, "")))
    return out, size


def _probe_shapes(
    backbone: nn.Module, names: list[str], size: tuple[int, int, int]
) -> dict[str, tuple[int, ...]] | None:
    """Output shapes of the modules ``names`` for a zero batch of ``size`` (None if the model rejects the size)."""
    try:
        return {n: tuple(s) for n, s in probe_shapes(backbone, names, size).shapes.items()}
    except SSALError:
        return None


def format_attach_points(name: str, points: list[AttachPoint], size: tuple[int, int, int]) -> str:
    """A plain-text table of ``attach_points``."""
    rows = [("alias", "module", "output", "layout", "from", "reduction")]
    for p in points:
        shape = "(B, " + ", ".join(map(str, p.shape)) + ")"
        rows.append((p.alias, p.name, shape, p.layout, p.source, f"/{p.reduction}" if p.reduction else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{name}: attach points for an input of {size[0]}x{size[1]}x{size[2]}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(
        "Use a module name or alias as a branch's 'at'; 'layout: ...' overrides the layout (needed where it is '?')."
    )
    return "\n".join(lines)
