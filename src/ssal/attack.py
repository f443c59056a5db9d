"""Adversarial attacks on the base network f (supplementary Sec. E.3, Fig. 5).

FGSM (Goodfellow et al. 2015) and BIM (Kurakin et al. 2017) perturb pixels in [0, 1] within an L-inf ball of
radius eps (pixel units, e.g. 8/255). The attacker sees only f: gradients come from the cross-entropy of the main
logits, the auxiliary branches g_i are hidden from it. ``evaluate_attack`` then measures, on the adversarial
images, the error of f, the group error of every g_i and the error of the joint prediction (+JP).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from .architecture import SSALModel
from .build import make_loader
from .errors import SSALError
from .files import atomic_write
from .prediction import SSALMetrics
from .runs import RunInfo, load_run_data, write_metrics
from .runtime import eval_mode

__all__ = [
    "ATTACKS",
    "BaseNetwork",
    "attack",
    "attack_batches",
    "bim",
    "evaluate_attack",
    "fgsm",
    "parse_eps",
    "plot_attack",
]

log = logging.getLogger(__name__)

ATTACKS = ("fgsm", "bim")


class BaseNetwork(nn.Module):
    """What the attacker sees: x -> main logits of f. The SSAL branches are not run (supplementary E.3)."""

    def __init__(self, model: SSALModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, with_branches=False).main


def _loss_sign(f: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sign of d CE(f(x), y) / dx (summed loss, so small per-sample gradients do not underflow)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(f(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(f: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM: x + eps * sign(grad_x CE(f(x), y)), clipped to [0, 1]. Parameters get no gradient."""
    if eps == 0:
        return x.clone()
    return (x + eps * _loss_sign(f, x, y)).clamp(0.0, 1.0).detach()


def bim(
    f: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, alpha: float | None = None
) -> torch.Tensor:
    """BIM: ``steps`` FGSM steps of size ``alpha``, each projected onto the eps-ball around x and onto [0, 1].

    ``alpha`` defaults to 1.25 * eps / steps, the ratio of Kurakin et al. (steps = 1.25 eps / alpha).
    """
    if steps < 1:
        raise SSALError(f"BIM needs at least one step, got {steps}")
    alpha = 1.25 * eps / steps if alpha is None else float(alpha)
    lo, hi = (x - eps).clamp_min(0.0), (x + eps).clamp_max(1.0)
    adv = x.clone()
    for _ in range(steps if eps > 0 else 0):
        adv = torch.minimum(torch.maximum(adv + alpha * _loss_sign(f, adv, y), lo), hi).detach()
    return adv


def attack(
    f: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps: float, steps: int = 10, alpha: float | None = None
) -> torch.Tensor:
    """Dispatch to ``fgsm`` or ``bim``."""
    if method == "fgsm":
        return fgsm(f, x, y, eps)
    if method == "bim":
        return bim(f, x, y, eps, steps, alpha)
    raise SSALError(f"unknown attack {method!r}; choose one of {', '.join(ATTACKS)}")


def parse_eps(text: str | Sequence[str], what: str = "eps") -> list[float]:
    """Parse eps values like ``0,1/255,2/255,0.03`` (commas or separate items) into floats in [0, 1]."""
    items = text.split(",") if isinstance(text, str) else [t for s in text for t in str(s).split(",")]
    out = []
    for t in (t.strip() for t in items):
        if not t:
            continue
        try:
            v = float(Fraction(t))
        except (ValueError, ZeroDivisionError):
            raise SSALError(f"bad {what} value {t!r}; use numbers like 0.03 or 8/255") from None
        if not 0.0 <= v <= 1.0:
            raise SSALError(f"{what} must lie in [0, 1] (pixel units), got {t}")
        out.append(v)
    if not out:
        raise SSALError(f"give at least one {what} value, e.g. 0,1/255,2/255,4/255,8/255")
    return out


def attack_batches(
    info: RunInfo,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x in [0, 1], y) of the run's ``split``; with ``limit``, a seeded random subset of that many images.

    A random subset, not the first images: stored splits are often sorted by class (CIFAR-100 NumPy, ImageFolder).
    """
    cfg = copy.deepcopy(info.config)
    cfg.trainer.channels_last = False
    if batch_size:
        cfg.data.eval_batch_size = int(batch_size)
    data = load_run_data(info, ("test",) if split == "test" else ("train", "val"), cfg)
    arrays = getattr(data, split)
    if arrays is None:
        raise SSALError(f"the run's data has no {split!r} split")
    gen = torch.Generator().manual_seed(seed)
    if limit is not None and not data.is_folder and limit < len(arrays):
        arrays = arrays.subset(torch.randperm(len(arrays), generator=gen)[:limit].sort().values)
    loader = make_loader(cfg, data, arrays, train=False, device=device)
    if limit is not None and data.is_folder and limit < len(loader.dataset):
        idx = torch.randperm(len(loader.dataset), generator=gen)[:limit].sort().values.tolist()
        loader = DataLoader(Subset(loader.dataset, idx), loader.batch_size, num_workers=cfg.data.workers)
    return loader


def evaluate_attack(
    info: RunInfo,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    method: str,
    eps_list: Sequence[float],
    steps: int = 10,
    alpha: float | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Error (%) of f, of each g_i (group error) and of +JP on adversarial images, one row per eps.

    The model's training mode is restored afterwards. At most ``limit`` images are used.
    """
    model = info.model
    device = next(model.parameters()).device
    metrics = [SSALMetrics(info.gammas, info.eta or 1.0) for _ in eps_list]
    seen = 0
    with eval_mode(model):
        f = BaseNetwork(model)
        for x, y in batches:
            if limit is not None and seen >= limit:
                break
            n = x.shape[0] if limit is None else min(x.shape[0], limit - seen)
            x, y = x[:n].to(device).float().contiguous(), y[:n].to(device)
            seen += n
            for eps, m in zip(eps_list, metrics, strict=True):
                adv = attack(f, x, y, method, eps, steps, alpha)
                with torch.no_grad():
                    m.update(model(adv, with_branches=True), y)
    if seen == 0:
        raise SSALError("no images to attack")
    return [_row(method, eps, steps, alpha, m, model.branch_names) for eps, m in zip(eps_list, metrics, strict=True)]


def _row(method: str, eps: float, steps: int, alpha: float | None, m: SSALMetrics, names: list[str]) -> dict:
    r = m.compute()
    row: dict[str, Any] = {"method": method, "eps": eps, "eps_255": eps * 255, "images": m.num_samples}
    if method == "bim":
        row.update(steps=steps, alpha=1.25 * eps / steps if alpha is None else alpha)
    row["f_err"] = 100.0 - r["f_top1"]
    for i, name in enumerate(names):
        row[f"{name}_group_err"] = 100.0 - r[f"g{i + 1}_acc"]
    if names:
        row["jp_err"] = 100.0 - r["jp_top1"]
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (errors in %)."""
    cols = [
        "eps_255",
        "f_err",
        *[k for k in rows[0] if k.endswith("_group_err")],
        *(["jp_err"] * ("jp_err" in rows[0])),
    ]
    head = ["eps (x 1/255)", "f error", *[c.replace("_group_err", " group error") for c in cols[2:]]]
    head = [h.replace("jp_err", "+JP error") for h in head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_attack(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Error vs eps for f, each g_i and +JP (like supplementary Fig. 5), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["eps_255"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [r["f_err"] for r in rows], "o-", label="f (attacked)")
    for k in (k for k in rows[0] if k.endswith("_group_err")):
        ax.plot(xs, [r[k] for r in rows], "s--", label=f"{k.replace('_group_err', '')} (group error)")
    if "jp_err" in rows[0]:
        ax.plot(xs, [r["jp_err"] for r in rows], "^-", label="+JP")
    ax.set_xlabel("eps (x 1/255)")
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{rows[0]['method'].upper()} on f, {rows[0]['images']} images", fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return out


def save_attack(rows: list[dict[str, Any]], out_dir: str | os.PathLike, title: str = "") -> tuple[Path, Path]:
    """Write ``attack_<method>.csv`` and ``attack_<method>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    stem = f"attack_{rows[0]['method']}"
    return write_metrics(out_dir / f"{stem}.csv", rows), plot_attack(rows, out_dir / f"{stem}.png", title)
