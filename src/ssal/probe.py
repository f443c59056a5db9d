"""Groups from a linear probe on a pretrained backbone's frozen features (``ssal.groupings: probe``).

Before the first training step, one pass over the training split (evaluation transforms, f in eval mode, no
gradients) collects f's penultimate features: the input of f's classifier, read by a forward hook. A linear probe
is fitted on them in closed form: ridge regression on one-hot targets, because it needs only sums over the samples
(feature Gram matrix and feature-class sums), which add exactly over batches and DDP ranks, with no learning rate or
epochs to tune. The ridge strength is picked from a small grid by the probe's accuracy on the evaluation samples,
whose confusion matrix then gives the groups (paper Eq. 1-2 and the balanced clustering, as for any confusion).

The evaluation samples are the run's validation split; when the run validates on its test split (no held-out part
of the training data) they are every ``HOLDOUT_EVERY``-th training sample instead, and the probe is fitted on the
rest. ``OnlineGrouping`` (``ssal.online``) calls ``run_probe`` at step 0 and counts its FLOPs as training compute.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .architecture import SSALModel
from .errors import SSALError
from .evaluation import confusion_matrix
from .features import classifier_layer

__all__ = [
    "ALPHAS",
    "HOLDOUT_EVERY",
    "FeatureSums",
    "ProbeResult",
    "probe_classifier",
    "collect_features",
    "fit_probe",
    "probe_confusion",
    "run_probe",
]

log = logging.getLogger(__name__)

#: Ridge strengths tried, as fractions of the mean eigenvalue of the centred feature Gram matrix (strongest first:
#: ties go to the smoother probe).
ALPHAS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
#: Without a validation split apart from the test split, every HOLDOUT_EVERY-th training sample evaluates the probe.
HOLDOUT_EVERY = 10

Reduce = Callable[[Tensor], Tensor]


def _no_reduce(t: Tensor) -> Tensor:
    return t


def probe_classifier(backbone: nn.Module) -> nn.Module:
    """f's classifier (the layer that produces its logits): the module whose input is the probe's feature."""
    layer = classifier_layer(backbone)
    if layer is None:
        raise SSALError(
            f"ssal.groupings=probe needs f's classifier (a final nn.Linear) in {type(backbone).__name__}; "
            "use ssal.groupings=online or weights"
        )
    return layer


@dataclass
class FeatureSums:
    """Sums over samples of features x (D) and one-hot targets y (C): enough for ridge regression."""

    n: Tensor  # () samples
    x: Tensor  # (D,) sum of x
    y: Tensor  # (C,) samples per class
    xx: Tensor  # (D, D) sum of x x^T
    xy: Tensor  # (D, C) sum of x y^T

    @classmethod
    def zeros(cls, dim: int, num_classes: int) -> FeatureSums:
        """Empty sums (float64, CPU)."""
        z = torch.zeros
        f64 = torch.float64
        return cls(z((), dtype=f64), z(dim, dtype=f64), z(num_classes, dtype=f64), z(dim, dim, dtype=f64),
                   z(dim, num_classes, dtype=f64))  # fmt: skip

    def add(self, x: Tensor, y: Tensor) -> None:
        """Add a batch: features (B, D), labels (B,)."""
        x, y = x.detach().to("cpu", torch.float64), y.detach().to("cpu", torch.long)
        self.n += x.shape[0]
        self.x += x.sum(0)
        self.y += torch.bincount(y, minlength=self.y.numel()).double()
        self.xx += x.T @ x
        self.xy.index_add_(1, y, x.T)

    def reduced(self, reduce: Reduce, device: Any = "cpu") -> FeatureSums:
        """The sums over every process (``reduce`` sums a tensor over DDP ranks)."""
        flat = torch.cat([t.reshape(-1) for t in (self.n, self.x, self.y, self.xx, self.xy)])
        out = reduce(flat.to(device)).to("cpu", torch.float64)
        d, c = self.x.numel(), self.y.numel()
        parts = out.split([1, d, c, d * d, d * c])
        return FeatureSums(parts[0].reshape(()), parts[1], parts[2], parts[3].reshape(d, d), parts[4].reshape(d, c))


def _features(h: Tensor) -> Tensor:
    if h.ndim == 4:  # a 1x1-conv classifier on maps: its spatial mean
        return h.mean((2, 3))
    if h.ndim != 2:
        raise SSALError(f"ssal.groupings=probe: f's classifier sees features of shape {tuple(h.shape)}, not (B, D)")
    return h


@torch.no_grad()
def collect_features(
    model: SSALModel,
    loader: Iterable[Any],
    num_classes: int,
    autocast: Any = None,
    holdout_every: int = 0,
) -> tuple[FeatureSums, Tensor, Tensor, int]:
    """One pass of frozen f over ``loader``: the sums of the fit samples, the held-out features and labels (every
    ``holdout_every``-th sample; none for 0) and the number of samples seen."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    captured: list[Tensor] = []
    hook = probe_classifier(model.backbone).register_forward_hook(lambda m, i, o: captured.append(i[0]))
    sums: FeatureSums | None = None
    held_x: list[Tensor] = []
    held_y: list[Tensor] = []
    seen = 0
    try:
        for x, y in loader:
            captured.clear()
            with autocast() if autocast is not None else contextlib.nullcontext():
                model(x.to(device), with_branches=False)
            if not captured:
                raise SSALError("ssal.groupings=probe: f's classifier was not called in the forward pass")
            h = _features(captured[-1]).float()
            y = y.to(h.device)
            if sums is None:
                sums = FeatureSums.zeros(h.shape[1], num_classes)
            keep = torch.ones(len(y), dtype=torch.bool, device=h.device)
            if holdout_every > 0:
                keep = (torch.arange(seen, seen + len(y), device=h.device) % holdout_every) != 0
                held_x.append(h[~keep].cpu())
                held_y.append(y[~keep].cpu())
            sums.add(h[keep], y[keep])
            seen += len(y)
    finally:
        hook.remove()
        model.train(was_training)
    if sums is None:
        raise SSALError("ssal.groupings=probe: the training split has no samples")
    hx = torch.cat(held_x) if held_x else torch.zeros(0, sums.x.numel())
    hy = torch.cat(held_y) if held_y else torch.zeros(0, dtype=torch.long)
    return sums, hx, hy, seen


def fit_probe(sums: FeatureSums, alphas: Iterable[float] = ALPHAS) -> list[tuple[Tensor, Tensor]]:
    """Ridge regression on one-hot targets, one (W (D, C), b (C,)) per ridge strength in ``alphas``."""
    n = float(sums.n)
    if n < 2:
        raise SSALError(f"ssal.groupings=probe: {n:.0f} training sample(s) to fit the probe on; need more")
    mx, my = sums.x / n, sums.y / n
    gram = sums.xx - n * torch.outer(mx, mx)  # centred: the bias is the mean target
    cross = sums.xy - n * torch.outer(mx, my)
    evals, evecs = torch.linalg.eigh((gram + gram.T) / 2)
    evals = evals.clamp_min(0.0)
    proj = evecs.T @ cross
    scale = float(evals.mean()) or 1.0
    out = []
    for a in alphas:
        w = evecs @ (proj / (evals + a * scale)[:, None])
        out.append((w, my - mx @ w))
    return out


@dataclass
class ProbeResult:
    """The probe's confusion on its evaluation samples (rows: true class) and what it was made from."""

    confusion: np.ndarray
    top1: float  # percent, on the evaluation samples
    alpha: float
    dim: int
    fit_samples: int
    eval_samples: int
    flops: float  # the probe's fit and evaluation, once (the feature passes are counted by the caller)


def probe_confusion(
    sums: FeatureSums,
    eval_x: Tensor,
    eval_y: Tensor,
    num_classes: int,
    reduce: Reduce = _no_reduce,
    device: Any = "cpu",
    alphas: Iterable[float] = ALPHAS,
) -> ProbeResult:
    """Fit the probe on ``sums`` (already summed over ranks) and count its confusion on this rank's evaluation
    samples, summed over ranks; the ridge strength with the most correct evaluation samples wins."""
    alphas = tuple(alphas)
    probes = fit_probe(sums, alphas)
    ex, ey = eval_x.to(torch.float64), eval_y.long()
    preds = [(ex @ w + b).argmax(1) for w, b in probes]
    counts = torch.tensor([[float((p == ey).sum()) for p in preds] + [float(len(ey))]], dtype=torch.float64)
    counts = reduce(counts.to(device)).cpu().reshape(-1)
    n_eval = int(counts[-1])
    if n_eval == 0:
        raise SSALError("ssal.groupings=probe: no samples to evaluate the probe on")
    best = int(torch.argmax(counts[:-1]))  # the first maximum: the strongest ridge among the best
    conf = torch.from_numpy(confusion_matrix(preds[best], ey, num_classes)).double()
    conf = reduce(conf.to(device)).cpu().round().long().numpy()
    d, c, n = sums.x.numel(), num_classes, float(sums.n)
    flops = 2 * n * d * (d + 1) + 10 * d**3 + len(alphas) * 2 * d * c * (d + n_eval)
    return ProbeResult(conf, 100.0 * float(counts[best]) / n_eval, alphas[best], d, int(n), n_eval, flops)


def run_probe(trainer: Any, pl_module: Any) -> tuple[np.ndarray, float, dict[str, Any]]:
    """The probe of a starting run (``OnlineGrouping`` at step 0): its confusion, its FLOPs (feature passes
    included, all ranks) and what to record in the groupings."""
    from .compute import forward_flops_per_sample

    model: SSALModel = pl_module.model
    dm = trainer.datamodule
    data = dm.data
    C, dev = model.num_classes, pl_module.device
    rank, ws = trainer.global_rank, trainer.world_size
    ctx = trainer.precision_plugin.forward_context

    def reduce(t: Tensor) -> Tensor:
        return trainer.strategy.reduce(t, reduce_op="sum")

    holdout = data.val is None or data.val is data.test  # the run validates on its test split: keep off it
    train = dm.loaders("train", train=False, device=dev, rank=rank, world_size=ws)
    sums, ex, ey, seen = collect_features(model, train, C, ctx, HOLDOUT_EVERY if holdout else 0)
    if not holdout:
        _, ex, ey, vseen = collect_features(model, dm.val_loader, C, ctx, holdout_every=1)
        seen += vseen
    res = probe_confusion(sums.reduced(reduce, dev), ex, ey, C, reduce, dev)
    passed = float(reduce(torch.tensor([float(seen)], dtype=torch.float64, device=dev)).item())
    flops = forward_flops_per_sample(model) * passed + res.flops
    where = "held-out training samples" if holdout else "the validation split"
    if trainer.is_global_zero:
        log.info(
            "linear probe on %d frozen features of %d training samples: top-1 %.2f%% on %d samples of %s (alpha %g)",
            res.dim, res.fit_samples, res.top1, res.eval_samples, where, res.alpha,
        )  # fmt: skip
    info = {
        "probe_top1": round(res.top1, 2),
        "probe_alpha": res.alpha,
        "probe_features": res.dim,
        "probe_fit_samples": res.fit_samples,
        "probe_eval": "train-holdout" if holdout else "val",
        "probe_eval_samples": res.eval_samples,
    }
    return res.confusion, flops, info
