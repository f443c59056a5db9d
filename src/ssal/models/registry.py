"""One registry and one factory for every model: the paper's architectures (supplementary Sec. B and C) and
any torchvision or timm classifier (``torchvision:<name>``, ``timm:<name>``, see ``ssal.models.zoo``).

``register_model(name)`` registers a builder ``(num_classes, **options) -> nn.Module``;
``create_model(name, num_classes, ssal=...)`` builds it and, if asked, wraps it in an ``SSALModel`` with the
paper's branches (``ssal="paper"``) or any others (a list of dicts or ``ssal.Branch``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..architecture import Branch, SSALModel
from ..errors import SSALError
from ..grouping import Grouping, random_grouping
from .zoo import create_zoo_backbone, is_zoo_name, load_backbone_weights, zoo_weights_info

__all__ = [
    "BRANCH_KEYS",
    "BranchConfig",
    "ModelEntry",
    "build_branches",
    "check_branch",
    "create_model",
    "list_models",
    "model_entry",
    "model_input_size",
    "paper_branches",
    "register_model",
    "scale_groups",
]

Builder = Callable[..., nn.Module]
BranchConfig = Mapping[str, Any]  # {"at": "g2", "k": 20, "head": "conv128-gap", "name": "g1"}
BRANCH_KEYS = ("at", "k", "head", "name", "layout")


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its builder, native input size and the paper's SSAL branches (if any)."""

    name: str
    builder: Builder
    input_size: tuple[int, int, int]
    paper_ssal: tuple[BranchConfig, ...] | None = None
    paper_num_classes: int | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    input_size: Sequence[int] = (3, 32, 32),
    paper_ssal: Sequence[BranchConfig] | None = None,
    paper_num_classes: int | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, **options)`` under ``name`` (duplicates are refused).

    ``paper_ssal`` lists the paper's branches (dicts with ``at``, ``k``, ``head``) used by ``ssal="paper"``.
    """

    def deco(builder: Builder) -> Builder:
        if name in _MODELS:
            raise SSALError(f"model {name!r} is already registered")
        size = tuple(int(s) for s in input_size)
        if len(size) != 3:
            raise SSALError(f"input_size must be (C, H, W), got {input_size}")
        paper = None if paper_ssal is None else tuple(dict(b) for b in paper_ssal)
        _MODELS[name] = ModelEntry(name, builder, size, paper, paper_num_classes)  # type: ignore[arg-type]
        return builder

    return deco


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise ``SSALError`` listing the valid ones."""
    if is_zoo_name(name):
        raise SSALError(f"{name} is a torchvision/timm model, not a registered one")
    try:
        return _MODELS[name]
    except KeyError:
        raise SSALError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}, or torchvision:<name> / timm:<name> "
            "(`ssal models` lists them)"
        ) from None


def model_input_size(name: str, options: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """The native input size (C, H, W) of a model: registered, or its weights' (torchvision/timm, default 224)."""
    if is_zoo_name(name):
        return zoo_weights_info(name, options).input_size or (3, 224, 224)
    return model_entry(name).input_size


def scale_groups(k: int, num_classes: int, paper_num_classes: int | None) -> int:
    """A paper group count for ``num_classes`` classes: k * C / C_paper, clipped to [2, C // 2] (paper Sec. 4.2)."""
    if paper_num_classes is None or num_classes == paper_num_classes:
        return int(k)
    return max(2, min(num_classes // 2, round(k * num_classes / paper_num_classes)))


def paper_branches(name: str, num_classes: int | None = None) -> list[dict[str, Any]]:
    """The paper's SSAL branches of ``name`` (positions, group counts, heads); SSALError if it has none.

    With ``num_classes`` different from the paper's data set, the group counts scale with C (``scale_groups``).
    """
    if is_zoo_name(name):
        raise SSALError(
            f"ssal.branches=paper is defined for the paper's models only; for {name} list the branches, "
            "e.g. [{at: g2, k: 10}] (`ssal models " + name + "` shows its attach points)"
        )
    entry = model_entry(name)
    if not entry.paper_ssal:
        with_paper = [n for n in list_models() if _MODELS[n].paper_ssal]
        raise SSALError(f"model {name!r} has no paper SSAL configuration; models that do: {', '.join(with_paper)}")
    C = entry.paper_num_classes if num_classes is None else int(num_classes)
    return [{**b, "k": scale_groups(b["k"], C, entry.paper_num_classes) if C else b["k"]} for b in entry.paper_ssal]


def _placeholder(num_classes: int, k: int, seed: int) -> Grouping:
    g = random_grouping(num_classes, k, seed=seed)
    return dataclasses.replace(g, source="placeholder")


def check_branch(i: int, cfg: Any, need_k: bool = True) -> dict[str, Any]:
    """Branch ``i``'s config as a dict, checked: a mapping with ``at`` (and ``k`` if ``need_k``), no other keys."""
    if not isinstance(cfg, Mapping):
        raise SSALError(f"ssal.branches[{i}] must be a mapping like {{at: g2, k: 20, head: conv128-gap}}, got {cfg!r}")
    unknown = [key for key in cfg if key not in BRANCH_KEYS]
    if unknown:
        raise SSALError(
            f"ssal.branches[{i}] has unknown key(s) {unknown} (allowed: {', '.join(BRANCH_KEYS)}; "
            "in YAML flow style write 'at: g2' with a space after the colon)"
        )
    if "at" not in cfg or (need_k and "k" not in cfg):
        raise SSALError(f"ssal.branches[{i}] needs 'at' (attach point) and 'k' (number of groups), got {dict(cfg)}")
    return dict(cfg)


def _branch_from_config(i: int, cfg: BranchConfig | Branch, num_classes: int, grouping: Grouping | None) -> Branch:
    if isinstance(cfg, Branch):
        return cfg if grouping is None else dataclasses.replace(cfg, grouping=grouping)
    cfg = check_branch(i, cfg, need_k=grouping is None)
    if grouping is None:
        grouping = _placeholder(num_classes, int(cfg["k"]), seed=i)
    return Branch(str(cfg["at"]), grouping, cfg.get("head"), cfg.get("name"), cfg.get("layout"))


def build_branches(
    name: str,
    num_classes: int,
    ssal: str | Sequence[BranchConfig | Branch],
    groupings: Sequence[Grouping] | None = None,
) -> list[Branch]:
    """Turn an ``ssal`` argument of ``create_model`` into ``Branch`` objects (placeholder groupings if none)."""
    configs: Sequence[BranchConfig | Branch]
    if isinstance(ssal, str):
        if ssal != "paper":
            raise SSALError(f"ssal must be None, 'paper' or a list of branches, got {ssal!r}")
        configs = paper_branches(name, num_classes)
    else:
        configs = list(ssal)
    if groupings is not None and len(groupings) != len(configs):
        raise SSALError(f"{len(groupings)} groupings given for {len(configs)} branches")
    return [
        _branch_from_config(i, c, num_classes, None if groupings is None else groupings[i])
        for i, c in enumerate(configs)
    ]


def _call_builder(entry: ModelEntry, num_classes: int, options: dict[str, Any]) -> nn.Module:
    params = inspect.signature(entry.builder).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [p for p in params if p != "num_classes" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in options if k not in allowed]
    if unknown and not takes_kwargs:
        raise SSALError(f"model {entry.name!r} has no option(s) {unknown}; options: {', '.join(allowed) or 'none'}")
    return entry.builder(num_classes, **options)


def create_model(
    name: str,
    num_classes: int,
    *,
    ssal: str | Sequence[BranchConfig | Branch] | None = None,
    groupings: Sequence[Grouping] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    pretrained: bool | str = False,
    input_size: Sequence[int] | None = None,
    load_weights: bool = True,
    **options: Any,
) -> nn.Module:
    """Build a registered architecture or a torchvision / timm classifier.

    Args:
        name: one of ``list_models()``, or ``torchvision:<name>`` / ``timm:<name>`` (``ssal models`` lists them).
        num_classes: C, the number of output classes.
        ssal: ``None`` for the plain backbone (returns logits (B, C)); ``[]`` for an ``SSALModel`` without
            branches; ``"paper"`` for the paper's branches (Sec. 4.4, supplementary Sec. C); or a list of
            dicts ``{"at", "k", "head", "name"}`` / ``ssal.Branch`` objects.
        groupings: one ``Grouping`` per branch (their k wins); random balanced placeholders if omitted.
        mean, std: input normalisation done inside the ``SSALModel`` (inputs are pixels in [0, 1]).
        pretrained: False; True for the library's pretrained weights (torchvision/timm, downloaded once); or the
            PATH of a local weights file (a state_dict or an ssal checkpoint, see ``ssal.models.zoo``).
        input_size: (C, H, W) the ``SSALModel`` probes its attach points with (default: the model's native size).
        load_weights: False builds the architecture ``pretrained`` implies without loading any weights.
        options: builder options of the architecture (e.g. ``dropout``; torchvision/timm keyword arguments).
    """
    if int(num_classes) < 2:
        raise SSALError(f"num_classes must be at least 2, got {num_classes}")
    if is_zoo_name(name):
        backbone, info = create_zoo_backbone(name, int(num_classes), pretrained, options, load_weights)
        size = tuple(input_size) if input_size is not None else info.input_size or (3, 224, 224)
    else:
        entry = model_entry(name)
        if pretrained is True:
            raise SSALError(
                f"{name} has no downloadable weights; set model.pretrained=PATH (a state_dict or an ssal checkpoint)"
            )
        backbone = _call_builder(entry, int(num_classes), options)
        if isinstance(pretrained, str) and pretrained and load_weights:
            load_backbone_weights(backbone, pretrained, name)
        size = tuple(input_size) if input_size is not None else entry.input_size
    if ssal is None:
        if groupings is not None:
            raise SSALError("groupings given but ssal=None; pass ssal='paper' or a list of branches")
        if mean is not None or std is not None:
            raise SSALError("mean/std need an SSALModel; pass ssal=[] to get one without branches")
        return backbone
    branches = build_branches(name, int(num_classes), ssal, groupings)
    return SSALModel(backbone, branches, input_size=size, mean=mean, std=std)
