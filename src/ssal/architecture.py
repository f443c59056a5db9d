"""The SSAL architecture (paper Sec. 3.2, Fig. 1): auxiliary group classifiers g_i attached to any classifier.

``SSALModel`` wraps an ``nn.Module`` classifier f (torchvision, timm or your own). Each ``Branch`` names
an intermediate module of f (a name from ``model.named_modules()``) whose output h feeds a head g_i that
predicts the group gamma_i(y). The model is pure: no loss, no device code, no data format.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .errors import SSALError
from .features import AmbiguousLayoutError, declared_layouts, default_positions, infer_layout, prefix_tokens_hint
from .grouping import Grouping
from .heads import DEFAULT_HEAD, DEFAULT_TOKEN_HEAD, OutputGroups, build_head

__all__ = ["OUTPUT", "AuxBranch", "Branch", "HeadSpec", "SSALModel", "SSALOutput", "ShapeProbe", "probe_shapes"]

#: The attach point of a head-less branch: its groups are read off f's own class probabilities (no extra compute).
OUTPUT = "output"

HeadSpec = str | Sequence[str] | Callable[[int, int], nn.Module]


class SSALOutput(NamedTuple):
    """Outputs of an SSAL model: main logits f(x) of shape (B, C) and one (B, k_i) tensor per branch."""

    main: torch.Tensor
    aux: tuple[torch.Tensor, ...] = ()


@dataclass
class Branch:
    """Where to attach an auxiliary head, what it predicts, and how it is built.

    ``at`` is a module name of the backbone (or an alias g1, g2, ... from ``ssal.features.default_positions``), or
    ``"output"``: a head-less branch whose group probabilities are sums of f's class probabilities (``head`` unused).
    ``head`` is a head spec string (see ``ssal.heads``) or a callable ``(in_channels, k) -> nn.Module`` that gets
    the raw feature; ``None`` picks ``DEFAULT_TOKEN_HEAD`` on tokens and ``DEFAULT_HEAD`` otherwise.
    ``layout`` states the feature layout at ``at`` (nchw, nhwc, tokens, tokens_cls, tokens_pP; see
    ``ssal.features``) when the model does not declare it and the output shape cannot prove it.
    """

    at: str
    grouping: Grouping
    head: HeadSpec | None = None
    name: str | None = None
    layout: str | None = None


class AuxBranch(nn.Module):
    """One auxiliary classifier g_i: a head plus its class-to-group map gamma_i (a LongTensor buffer)."""

    def __init__(self, at: str, head: nn.Module, gamma: torch.Tensor, name: str, layout: str = "nchw") -> None:
        super().__init__()
        self.at, self.name, self.layout = at, name, layout
        self.head = head
        self.register_buffer("gamma", gamma.long().clone())

    @property
    def num_groups(self) -> int:
        """k_i, the number of groups this branch predicts."""
        return int(self.gamma.max()) + 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h, self.gamma) if self.at == OUTPUT else self.head(h)


def _as_tensor(out: object, what: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise SSALError(f"{what} returned {type(out).__name__}; an SSAL branch needs a tensor output")


@dataclass
class ShapeProbe:
    """What one zero batch through a backbone shows: the first output shape of each watched module (the first
    tensor of a tuple output), the type of any other output, how often each module ran, and the backbone's output."""

    shapes: dict[str, torch.Size]
    other: dict[str, str]
    calls: dict[str, int]
    output: object


def probe_shapes(backbone: nn.Module, names: Sequence[str], size: Sequence[int]) -> ShapeProbe:
    """Run a zero batch of two images of ``size`` (C, H, W) through ``backbone`` in eval mode with hooks on the
    modules ``names``; its mode is restored. ``SSALError`` if the backbone rejects the size."""
    probe = ShapeProbe({}, {}, dict.fromkeys(names, 0), None)
    modules = dict(backbone.named_modules())

    def seen(n: str, o: object) -> None:
        probe.calls[n] += 1
        t = o[0] if isinstance(o, (tuple, list)) and o and isinstance(o[0], torch.Tensor) else o
        if isinstance(t, torch.Tensor):
            probe.shapes.setdefault(n, t.shape)
        else:
            probe.other.setdefault(n, type(o).__name__)

    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen(n, o)) for n in dict.fromkeys(names)]
    p = next(backbone.parameters(), None)
    size = tuple(size)
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            probe.output = backbone(torch.zeros(2, *size, device=p.device if p is not None else None))
    except (RuntimeError, AssertionError, ValueError) as e:
        raise SSALError(
            f"the backbone failed on an input of size {size}: {str(e).splitlines()[0]} (a model built for one "
            "input size needs that size: model.input_size, or its size option such as image_size / img_size)"
        ) from None
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    return probe


class _BranchHook:
    """Forward hook on an attach point: runs its branches g_i right when h is produced, before any in-place op.

    A plain object (not a closure), so that ``copy.deepcopy`` and pickling of the model rebind it to the copy.
    """

    def __init__(self, owner: SSALModel, at: str) -> None:
        self.owner, self.at = owner, at

    def __call__(self, module: nn.Module, inputs: object, output: object) -> None:
        store = self.owner._aux_out
        if store is not None:
            h = _as_tensor(output, self.at)
            for b in self.owner.branches:
                if b.at == self.at:
                    store[b.name] = b(h)


class SSALModel(nn.Module):
    """A classifier f with auxiliary group classifiers g_i attached at named intermediate modules.

    Args:
        backbone: any classifier returning logits of shape (B, C).
        branches: where and what to attach.
        input_size: (channels, height, width) of one input, used once to infer branch widths.
        mean, std: optional per-channel input normalisation applied first, so that the model takes
            pixels in [0, 1] (what attacks and exported models need).
    """

    def __init__(
        self,
        backbone: nn.Module,
        branches: Sequence[Branch] = (),
        input_size: Sequence[int] = (3, 224, 224),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if (mean is None) != (std is None):
            raise SSALError("give both mean and std for input normalisation, or neither")
        self.normalize = mean is not None
        if mean is not None and std is not None:
            if len(mean) != len(std) or len(mean) != int(input_size[0]):
                raise SSALError(
                    f"mean and std need one value per input channel ({int(input_size[0])}), "
                    f"got {len(mean)} and {len(std)}"
                )
            if not all(float(s) > 0 for s in std):
                raise SSALError(f"std must be positive, got {list(std)}")
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = tuple(int(s) for s in input_size)
        self._aux_out: dict[str, torch.Tensor] | None = None
        modules = dict(backbone.named_modules())
        aliases = default_positions(backbone)
        targets = [OUTPUT if b.at == OUTPUT else self._resolve(b.at, modules, aliases) for b in branches]
        hooked = [t for t in targets if t != OUTPUT]
        shapes, self.num_classes = self._probe(hooked)
        inner = [(b, t) for b, t in zip(branches, targets, strict=True) if t != OUTPUT]
        layouts = iter(self._layouts([b for b, _ in inner], [t for _, t in inner], shapes))
        self.branches = nn.ModuleList()
        for i, (b, at) in enumerate(zip(branches, targets, strict=True)):
            g = b.grouping
            if not isinstance(g, Grouping):
                raise SSALError(f"branch {i}: grouping must be an ssal.Grouping, got {type(g).__name__}")
            if g.num_classes != self.num_classes:
                raise SSALError(
                    f"branch {i} at {b.at!r}: its grouping has {g.num_classes} classes "
                    f"but the model predicts {self.num_classes}"
                )
            if at == OUTPUT:
                self.branches.append(AuxBranch(at, OutputGroups(g.k), g.as_tensor(), b.name or f"g{i + 1}", "logits"))
                continue
            lay = next(layouts)
            cin = lay.channels(shapes[at])
            if callable(b.head):
                head = b.head(cin, g.k)
            else:
                spec = b.head if b.head is not None else DEFAULT_TOKEN_HEAD if lay.kind == "tokens" else DEFAULT_HEAD
                head = build_head(spec, cin, g.k, lay, lay.grid(shapes[at]))
            self.branches.append(AuxBranch(at, head, g.as_tensor(), b.name or f"g{i + 1}", str(lay)))
        names = self.branch_names
        if len(set(names)) != len(names):
            raise SSALError(f"branch names must be unique, got {names}")
        self._move_branches_like_backbone()
        self._hooks = [modules[at].register_forward_hook(self._make_hook(at)) for at in dict.fromkeys(hooked)]

    # --- construction helpers ----------------------------------------------------------------------
    @staticmethod
    def _resolve(at: str, modules: dict[str, nn.Module], aliases: dict[str, str]) -> str:
        name = aliases.get(at, at)
        if name in modules and name != "":
            return name
        valid = [n for n in modules if n]
        hint = difflib.get_close_matches(at, valid + list(aliases), n=5)
        listing = (
            ", ".join(list(aliases) + valid) if len(valid) <= 80 else ", ".join(list(aliases) + valid[:80]) + ", ..."
        )
        msg = f"unknown attach point {at!r}"
        msg += f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise SSALError(f"{msg}; valid names: {listing}")

    def _layouts(self, branches: Sequence[Branch], targets: Sequence[str], shapes: dict[str, torch.Size]) -> list:
        """The feature layout of each branch (``ssal.features.infer_layout``); a second probe at twice the input
        size settles shapes that one probe leaves ambiguous (which axes are spatial)."""
        declared, prefix = declared_layouts(self.backbone), prefix_tokens_hint(self.backbone)
        hw = self.input_size[1:]
        alt: dict[str, torch.Size] | None = None
        out = []
        for b, at in zip(branches, targets, strict=True):
            try:
                lay, _ = infer_layout(shapes[at], at, b.layout, declared.get(at), prefix, hw)
            except AmbiguousLayoutError:
                if alt is None:
                    alt = self._probe_alt(targets)
                if not alt:
                    raise
                lay, _ = infer_layout(shapes[at], at, b.layout, declared.get(at), prefix, hw, alt.get(at))
            out.append(lay)
        return out

    def _probe_alt(self, targets: Sequence[str]) -> dict[str, torch.Size]:
        """Attach-point shapes at twice the input size ({} if the backbone does not take that size)."""
        c, h, w = self.input_size
        try:
            return self._probe(targets, (c, 2 * h, 2 * w))[0]
        except SSALError:
            return {}

    def _probe(self, targets: Sequence[str], size: Sequence[int] | None = None) -> tuple[dict[str, torch.Size], int]:
        """Run one dummy batch through the backbone to learn the attach-point shapes and C."""
        modules = dict(self.backbone.named_modules())
        probe = probe_shapes(self.backbone, targets, self.input_size if size is None else size)
        out = _as_tensor(probe.output, "the backbone")
        shapes, calls = probe.shapes, probe.calls
        if probe.other:
            t, kind = next(iter(probe.other.items()))
            raise SSALError(f"{t} returned {kind}; an SSAL branch needs a tensor output")
        if out.dim() != 2:
            raise SSALError(f"the backbone must return logits of shape (B, C), got {tuple(out.shape)}")
        for t in targets:
            if t not in shapes:
                kids = [n for n, _ in modules[t].named_children()]
                raise SSALError(
                    f"attach point {t!r} is never called as a whole (the model calls its parts one by one)"
                    + (f"; attach to one of its children, e.g. {t}.{kids[-1]}" if kids else "")
                )
            if calls[t] > 1:  # e.g. the ReLU a ResNet block applies twice: which of its outputs is the feature?
                parent = t.rpartition(".")[0]
                raise SSALError(
                    f"attach point {t!r} runs {calls[t]} times per forward pass (the model reuses the module), so "
                    "its output is not one feature; attach to a module that runs once"
                    + (f", e.g. {parent!r}" if parent else "")
                )
        return shapes, int(out.shape[1])

    def _move_branches_like_backbone(self) -> None:
        p = next(self.backbone.parameters(), None)
        if p is not None:
            self.branches.to(device=p.device, dtype=p.dtype)

    def _make_hook(self, at: str) -> _BranchHook:
        return _BranchHook(self, at)

    # --- public API ---------------------------------------------------------------------------------
    @property
    def gammas(self) -> list[torch.Tensor]:
        """The class-to-group maps gamma_i, one LongTensor of shape (C,) per branch."""
        return [b.gamma for b in self.branches]

    @property
    def branch_names(self) -> list[str]:
        """The names of the branches (g1, g2, ... unless given)."""
        return [b.name for b in self.branches]

    def forward(self, x: torch.Tensor, with_branches: bool = True) -> SSALOutput:
        """Main logits and the logits of every branch (in branch order); ``with_branches=False`` skips the branches
        entirely (the paper's +TR: f alone). ``x`` is a float batch (pixels in [0, 1] if mean/std are given)."""
        if not x.is_floating_point():
            raise SSALError(f"the model takes a float image batch, got {x.dtype} (convert with x.float() / 255)")
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if not with_branches or len(self.branches) == 0:
            return SSALOutput(_as_tensor(self.backbone(x), "the backbone"), ())
        self._aux_out = {}
        try:
            main = _as_tensor(self.backbone(x), "the backbone")
            for b in self.branches:
                if b.at == OUTPUT:
                    self._aux_out[b.name] = b(main)
            aux = tuple(self._aux_out[b.name] for b in self.branches)
        finally:
            self._aux_out = None
        return SSALOutput(main, aux)
