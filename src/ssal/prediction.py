"""SSAL predictions (paper Sec. 3.4) and their metrics.

- +TR: the main classifier alone, softmax(f).
- +JP: the joint probability P(y|x) proportional to softmax(f)_y * prod_i softmax(g_i)_{gamma_i(y)} ** eta_i.
- +LC: a linear classifier on the concatenated outputs of f and every g_i, fitted after training.
- +TS: temperature scaling of a prediction's log-probabilities, one temperature fitted on held-out data by NLL
  (Guo et al., ICML 2017); top-1 is unchanged, calibration improves.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import SSALOutput
from .errors import SSALError

__all__ = [
    "LinearCombination",
    "SSALMetrics",
    "fit_linear_combination",
    "class_log_probs",
    "fit_temperature",
    "negative_log_likelihood",
    "joint_log_probs",
    "joint_probability",
    "main_probability",
    "topk_correct",
    "validate_eta",
]


def validate_eta(eta: float | Sequence[float], num_branches: int) -> list[float]:
    """Expand eta to one value per branch and check that each lies in (0, 1]."""
    scalar = isinstance(eta, numbers.Real) or (isinstance(eta, torch.Tensor) and eta.dim() == 0)
    etas = [float(eta)] * num_branches if scalar else [float(e) for e in eta]
    if len(etas) != num_branches:
        raise SSALError(f"{len(etas)} eta values given for {num_branches} branches")
    for e in etas:
        if not 0.0 < e <= 1.0:
            raise SSALError(f"eta must be in (0, 1], got {e}")
    return etas


def main_probability(out: SSALOutput) -> torch.Tensor:
    """+TR: softmax(f(x)), shape (B, C)."""
    return out.main.float().softmax(-1)


def joint_log_probs(
    out: SSALOutput, gammas: Sequence[torch.Tensor], eta: float | Sequence[float] = 1.0
) -> torch.Tensor:
    """Normalised log P(y|x) of the joint prediction +JP (paper Sec. 3.4), shape (B, C).

    log P = log_softmax(f)_y + sum_i eta_i * log_softmax(g_i)_{gamma_i(y)}, renormalised over y.
    The gather ``[:, gamma_i]`` lifts group scores to classes in one indexing call.
    """
    if len(gammas) != len(out.aux):
        raise SSALError(f"{len(gammas)} groupings given for {len(out.aux)} branch outputs")
    etas = validate_eta(eta, len(out.aux))
    num_classes = out.main.shape[-1]
    for i, g in enumerate(gammas):  # not while an export traces: the shapes are fixed by then
        if not torch.jit.is_tracing() and tuple(g.shape) != (num_classes,):
            raise SSALError(f"gamma {i} has shape {tuple(g.shape)}; the model predicts {num_classes} classes")
    logp = out.main.float().log_softmax(-1)
    for e, g, logits in zip(etas, gammas, out.aux, strict=True):
        logp = logp + e * logits.float().log_softmax(-1)[:, g.to(logits.device)]
    return logp.log_softmax(-1)


def class_log_probs(
    out: SSALOutput,
    gammas: Sequence[torch.Tensor],
    eta: float | Sequence[float] = 1.0,
    mode: str = "jp",
    temperature: float = 1.0,
) -> torch.Tensor:
    """The class log-probabilities a run reports: +JP (``mode="jp"`` and branches present), else f's (+TR),
    temperature-scaled by ``temperature`` (+TS; 1 leaves them as they are). Shape (B, C); ``.exp()`` gives the
    probabilities."""
    logp = joint_log_probs(out, gammas, eta) if mode == "jp" and out.aux else out.main.float()
    return (logp / temperature).log_softmax(-1)


def joint_probability(
    out: SSALOutput, gammas: Sequence[torch.Tensor], eta: float | Sequence[float] = 1.0
) -> torch.Tensor:
    """+JP: the normalised joint probabilities P(y|x), shape (B, C)."""
    return joint_log_probs(out, gammas, eta).exp()


# --- +LC -----------------------------------------------------------------------------------------
class LinearCombination(nn.Module):
    """+LC: one linear layer on [softmax(f), softmax(g_1), ...] giving class logits (paper Sec. 3.4)."""

    def __init__(self, num_classes: int, group_counts: Sequence[int]) -> None:
        super().__init__()
        self.group_counts = [int(k) for k in group_counts]
        self.linear = nn.Linear(num_classes + sum(self.group_counts), num_classes)

    @staticmethod
    def features(out: SSALOutput) -> torch.Tensor:
        """The concatenated probabilities of f and every g_i, shape (B, C + sum k_i)."""
        return torch.cat([t.float().softmax(-1) for t in (out.main, *out.aux)], dim=1)

    def forward(self, out: SSALOutput) -> torch.Tensor:
        return self.linear(self.features(out))


def fit_linear_combination(
    features: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    group_counts: Sequence[int],
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> LinearCombination:
    """Fit +LC by full-batch L-BFGS on held-out ``LinearCombination.features`` of a frozen model."""
    lc = LinearCombination(num_classes, group_counts).to(features.device)
    if features.shape[1] != lc.linear.in_features:
        raise SSALError(f"LC features have {features.shape[1]} columns, expected {lc.linear.in_features}")
    x, y = features.detach().float(), targets.detach().long()
    opt = torch.optim.LBFGS(lc.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lc.linear(x), y) + weight_decay * lc.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lc.eval().requires_grad_(False)


# --- +TS ----------------------------------------------------------------------------------------
def negative_log_likelihood(log_probs: torch.Tensor, target: torch.Tensor) -> float:
    """Mean NLL of ``target`` under (possibly unnormalised) log-probabilities, renormalised over classes."""
    return float(F.cross_entropy(log_probs.float(), target.long()))


def fit_temperature(log_probs: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(log_probs / T) on held-out data (+TS).

    ``log_probs`` are logits or log-probabilities (f's logits, or +JP's joint log-probabilities); T is fitted as
    log T by L-BFGS, so it stays positive.
    """
    if log_probs.shape[0] != target.shape[0] or log_probs.shape[0] == 0:
        raise SSALError(f"temperature scaling needs held-out outputs and targets, got {log_probs.shape[0]} outputs "
                        f"and {target.shape[0]} targets")  # fmt: skip
    x, y = log_probs.detach().float(), target.detach().long()
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        raise SSALError(f"temperature scaling diverged (T = {t}); are the held-out outputs finite?")
    return t


# --- metrics ------------------------------------------------------------------------------------
def topk_correct(scores: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many rows have the target among their top-k scores, for each k (k is capped at C)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == target[:, None]
    return [int(hit[:, : min(k, kmax)].any(1).sum()) for k in ks]


class SSALMetrics:
    """Accumulates top-1/top-5 of f, +JP (and +LC if given) and the group accuracy of each g_i.

    ``counts`` is one float64 tensor, so a distributed engine can all-reduce it in one call. Not torchmetrics'
    ``MulticlassAccuracy``: +JP and the group accuracies need the groupings, and one tensor syncs every metric at once.
    """

    def __init__(
        self,
        gammas: Sequence[torch.Tensor],
        eta: float | Sequence[float] = 1.0,
        lc: LinearCombination | None = None,
    ) -> None:
        self.gammas = list(gammas)
        self.eta = validate_eta(eta, len(self.gammas)) if self.gammas else []
        self.lc = lc
        self.keys = ["f_top1", "f_top5"]
        if self.gammas:
            self.keys += ["jp_top1", "jp_top5"] + [f"g{i + 1}_acc" for i in range(len(self.gammas))]
        if lc is not None:
            self.keys += ["lc_top1", "lc_top5"]
        self.counts = torch.zeros(len(self.keys) + 1, dtype=torch.float64)  # last entry: sample count

    @torch.no_grad()
    def update(self, out: SSALOutput, target: torch.Tensor) -> None:
        """Add one batch."""
        vals = topk_correct(out.main, target)
        if self.gammas:
            vals += topk_correct(joint_log_probs(out, self.gammas, self.eta), target)
            for g, logits in zip(self.gammas, out.aux, strict=True):
                vals.append(int((logits.argmax(1) == g.to(target.device)[target]).sum()))
        if self.lc is not None:
            vals += topk_correct(self.lc(out), target)
        vals.append(target.numel())
        self.counts += torch.tensor(vals, dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        """Accuracies in percent."""
        n = max(float(self.counts[-1]), 1.0)
        return {k: 100.0 * float(v) / n for k, v in zip(self.keys, self.counts[:-1], strict=True)}

    @property
    def num_samples(self) -> int:
        """How many samples were added."""
        return int(self.counts[-1])
