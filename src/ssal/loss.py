"""The SSAL training objective (paper Sec. 3.3, Eq. 3)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import SSALOutput
from .errors import SSALError
from .grouping import Grouping

__all__ = ["LossParts", "SSALLoss", "as_gammas", "group_targets", "membership"]


class LossParts(NamedTuple):
    """The total loss and its terms: L_f and one L_g per branch (unweighted), for logging."""

    total: torch.Tensor
    main: torch.Tensor
    aux: tuple[torch.Tensor, ...]


def as_gammas(groupings: Sequence[Grouping | torch.Tensor | Sequence[int]]) -> list[torch.Tensor]:
    """Turn groupings (or raw maps) into LongTensors gamma_i."""
    out = []
    for g in groupings:
        out.append(g.as_tensor() if isinstance(g, Grouping) else torch.as_tensor(g, dtype=torch.long))
    return out


def membership(gamma: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """The C x k one-hot membership matrix of ``gamma`` (row c is the one-hot of gamma(c))."""
    return F.one_hot(gamma.long(), int(gamma.max()) + 1 if k is None else k).float()


def group_targets(target: torch.Tensor, gamma: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """A branch's soft group targets (B, k): the class targets (B, C) summed over each group's members.

    ``target`` is a (mixed) distribution over classes (mixup, cutmix); ``target @ membership(gamma)``.
    Class indices (B,) give the one-hot of gamma(y).
    """
    m = membership(gamma.to(target.device), k)
    if target.dim() == 1:
        return m[target]
    return target.float() @ m


class SSALLoss(nn.Module):
    """L = lambda_1 * CE(f(x), y) + sum_i lambda_2,i * CE(g_i(x), gamma_i(y))  (paper Eq. 3).

    Args:
        gammas: the class-to-group maps of the branches, e.g. ``model.gammas``.
        main_weight: lambda_1.
        aux_weights: lambda_2,i, one float for all branches or one per branch.
        label_smoothing: applied to every cross-entropy term.
        group_smoothing: f's smoothing mass goes to the true class's group mates under the first branch's grouping
            (uniformly over the other members of gamma_1(y); a class alone in its group keeps it) instead of to
            every class: group-aware label smoothing.

    ``target`` is class indices (B,) or soft class targets (B, C), e.g. mixed by mixup/cutmix. A branch's soft
    target is then ``group_targets`` (the class targets summed over each group). Smoothing is linear in the
    one-hot, so applying it to the mixed target equals mixing the smoothed one-hots (as timm does).
    """

    def __init__(
        self,
        gammas: Sequence[Grouping | torch.Tensor | Sequence[int]] = (),
        main_weight: float = 1.0,
        aux_weights: float | Sequence[float] = 1.0,
        label_smoothing: float = 0.0,
        group_smoothing: bool = False,
    ) -> None:
        super().__init__()
        gs = as_gammas(gammas)
        weights = [float(aux_weights)] * len(gs) if isinstance(aux_weights, (int, float)) else list(aux_weights)
        if len(weights) != len(gs):
            raise SSALError(f"ssal.aux_weights has {len(weights)} values for {len(gs)} branches")
        if not 0.0 <= label_smoothing < 1.0:
            raise SSALError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not all(math.isfinite(float(w)) and float(w) >= 0 for w in [main_weight, *weights]):
            raise SSALError(f"loss weights must be finite and >= 0, got main {main_weight}, aux {weights}")
        self.main_weight, self.aux_weights, self.label_smoothing = (
            float(main_weight),
            weights,
            label_smoothing,
        )
        for i, g in enumerate(gs):
            if g.dim() != 1 or g.numel() < 2 or int(g.min()) < 0:
                raise SSALError(f"gamma {i} must map C >= 2 classes to group ids >= 0, got shape {tuple(g.shape)}")
            self.register_buffer(f"gamma{i}", g.clone())
        if group_smoothing and not gs:
            raise SSALError("group_smoothing needs a branch: its grouping names each class's group mates")
        self.group_smoothing = bool(group_smoothing)
        self.num_branches = len(gs)
        self.num_classes = [g.numel() for g in gs]
        self.group_counts = [int(g.max()) + 1 for g in gs]

    def forward(self, out: SSALOutput, target: torch.Tensor) -> LossParts:
        """The weighted total and each term; branches missing from ``out`` (main-only mode) are skipped."""
        self._check(out, target)
        ls, soft = self.label_smoothing, target.dim() == 2
        if self.group_smoothing and ls > 0:
            if soft:  # the mixture of the rows of the C x C matrix of each class's group-smoothed target
                c = target.shape[1]
                smoothed = target.float() @ self.group_smoothed_target(torch.arange(c, device=target.device))
            else:
                smoothed = self.group_smoothed_target(target)
            main = F.cross_entropy(out.main.float(), smoothed)
        else:
            main = F.cross_entropy(out.main.float(), target.float() if soft else target, label_smoothing=ls)
        total = self.main_weight * main
        aux = []
        for i, logits in enumerate(out.aux):
            gamma = getattr(self, f"gamma{i}").to(target.device)
            tg = group_targets(target, gamma, self.group_counts[i]) if soft else gamma[target]
            term = F.cross_entropy(logits.float(), tg, label_smoothing=ls)
            aux.append(term)
            total = total + self.aux_weights[i] * term
        return LossParts(total, main, tuple(aux))

    def group_smoothed_target(self, target: torch.Tensor) -> torch.Tensor:
        """Soft targets (B, C): 1 - eps on y, eps spread evenly over y's group mates under gamma_1."""
        gamma = self.gamma0.to(target.device)
        mates = (gamma[target][:, None] == gamma[None, :]).float()
        mates[torch.arange(target.numel(), device=target.device), target] = 0.0
        n = mates.sum(1, keepdim=True)
        alone = (n == 0).float()  # a singleton group: the mass stays on y
        onehot = F.one_hot(target, gamma.numel()).float()
        ls = self.label_smoothing
        return (1 - ls) * onehot + ls * (mates / n.clamp_min(1) + alone * onehot)

    def _check(self, out: SSALOutput, target: torch.Tensor) -> None:
        """Shapes only (no device sync): an SSALOutput with no more branches than groupings, long class indices (B,)
        or float soft targets (B, C), and each gamma_i matching the outputs it meets."""
        if not (hasattr(out, "main") and hasattr(out, "aux")):
            raise SSALError(f"SSALLoss takes the SSALOutput of an SSALModel, got {type(out).__name__}")
        if len(out.aux) > self.num_branches:
            raise SSALError(f"the model has {len(out.aux)} branches but the loss knows {self.num_branches} groupings")
        b, c = out.main.shape[0], out.main.shape[-1]
        hard = target.dim() == 1 and target.dtype == torch.long
        soft = target.dim() == 2 and target.is_floating_point() and target.shape[1] == c
        if not (hard or soft) or target.shape[0] != b:
            raise SSALError(
                f"the target must be class indices of shape ({b},) or soft targets of shape ({b}, {c}), "
                f"got {target.dtype} of shape {tuple(target.shape)}"
            )
        for i, logits in enumerate(out.aux[: self.num_branches]):
            c, k = self.num_classes[i], self.group_counts[i]
            if c != out.main.shape[-1] or k != logits.shape[-1]:
                raise SSALError(
                    f"gamma {i} maps {c} classes to {k} groups but the model gives {out.main.shape[-1]} classes "
                    f"and branch {i} {logits.shape[-1]} groups (the loss's groupings differ from the model's)"
                )
