"""Training compute: FLOPs counted by torch's FLOP counter, accumulated over the steps a run takes.

Every run's ``metrics.csv`` carries ``train_flops``: the cumulative forward + backward FLOPs of its training steps
(branches included while they run), plus any data pass the run needs to make its groups (online groupings). The
cost of one step is counted once per model on a copy (``torch.utils.flop_counter``: matmuls and convolutions) and
scaled by the samples each step takes, summed over DDP ranks. Validation passes are monitoring, not counted.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from .architecture import SSALModel

__all__ = ["ComputeMeter", "forward_flops_per_sample", "train_flops_per_sample"]


def _copy_and_input(model: SSALModel, n: int) -> tuple[SSALModel, torch.Tensor]:
    m = copy.deepcopy(model)
    p = next(m.parameters(), None)
    x = torch.rand(n, *model.input_size, device=p.device if p is not None else None)
    return m, x


def train_flops_per_sample(model: SSALModel, with_branches: bool = True, n: int = 2) -> float:
    """Forward + backward FLOPs of one training sample (main loss and, with branches, every branch)."""
    m, x = _copy_and_input(model, n)
    m.train()
    with FlopCounterMode(display=False) as counter:
        out = m(x, with_branches=with_branches)
        loss = out.main.float().logsumexp(1).mean() + sum(a.float().logsumexp(1).mean() for a in out.aux)
        loss.backward()
    return counter.get_total_flops() / n


def forward_flops_per_sample(model: SSALModel, with_branches: bool = False, n: int = 2) -> float:
    """Forward FLOPs of one inference sample."""
    m, x = _copy_and_input(model, n)
    m.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(x, with_branches=with_branches)
    return counter.get_total_flops() / n


class ComputeMeter(L.Callback):
    """Counts the training FLOPs of a run (steps x samples x cost of a step, plus ``extra()`` passes)."""

    def __init__(self, extra: Any = None) -> None:
        self.extra = extra  # a callable returning FLOPs spent outside training steps (e.g. online grouping passes)
        self.step_flops = 0.0
        self.per_sample: dict[bool, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"step_flops": self.step_flops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_flops = float(state.get("step_flops", 0.0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model: SSALModel = pl_module.model
        self.per_sample = {False: train_flops_per_sample(model, with_branches=False)}
        self.per_sample[True] = (
            train_flops_per_sample(model, with_branches=True) if len(model.branches) else self.per_sample[False]
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        b = int(batch[1].shape[0]) * trainer.world_size
        self.step_flops += self.per_sample[bool(pl_module.with_branches and len(pl_module.model.branches))] * b

    @property
    def total(self) -> float:
        """Training FLOPs so far: the steps plus the extra passes."""
        return self.step_flops + (float(self.extra()) if self.extra is not None else 0.0)
