"""Autogenous groupings in one run: the groups come from the model being trained (paper Sec. 3.1, one pass).

With ``ssal.groupings: online`` a run trains f alone (branches skipped: no compute, no loss) until
``ssal.group_epoch`` E0. At E0 it computes f's confusion matrix on its validation split (summed over DDP ranks),
builds each branch's grouping with the configured criterion and k (paper Eq. 1-2 and supplementary A), loads
them into the branches and the loss, writes ``groupings/g*.json`` (marked ``online`` with their epoch) and trains
on with the branches. ``ssal.groupings: weights`` does the same from the cosine similarity of f's class weights
(its last linear layer; no data pass). ``ssal.regroup_every`` recomputes the groups every N epochs after E0.

The callback's state (when groups were made, and the groupings) is part of every checkpoint, so a resumed run
continues with the same groups; gamma itself lives in the model's and the loss's buffers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from .architecture import SSALModel
from .compute import forward_flops_per_sample
from .config import SSALConfig
from .errors import SSALError
from .evaluation import confusion_matrix
from .features import classifier_layer
from .grouping import Grouping, group_from_confusion
from .runs import RunPaths

__all__ = ["ONLINE_SOURCES", "OnlineGrouping", "validation_confusion", "weight_similarity"]

log = logging.getLogger(__name__)

#: ``ssal.groupings`` values whose groups are made during training (``probe``: at step 0, see ``ssal.probe``).
ONLINE_SOURCES = ("online", "weights", "probe")


@torch.no_grad()
def validation_confusion(
    model: SSALModel, loader: Any, num_classes: int, autocast: Any = None
) -> tuple[np.ndarray, int]:
    """f's C x C confusion counts (rows: true class) over ``loader``, and the input samples seen."""
    was_training = model.training
    model.eval()
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    n = 0
    try:
        for x, y in loader:
            with autocast() if autocast is not None else contextlib.nullcontext():
                pred = model(x, with_branches=False).main.argmax(1)
            conf += confusion_matrix(pred.cpu(), y.cpu(), num_classes)
            n += int(y.numel())
    finally:
        model.train(was_training)
    if n == 0:
        raise SSALError("online groupings need a validation split with samples (data.val_fraction > 0)")
    return conf, n


def _class_layer(backbone: nn.Module, num_classes: int) -> nn.Linear:
    layer = classifier_layer(backbone, num_classes)
    if not isinstance(layer, nn.Linear):
        raise SSALError(
            f"ssal.groupings=weights needs a final nn.Linear with {num_classes} outputs in the backbone; "
            "use ssal.groupings=online (confusion on the validation split) instead"
        )
    return layer


@torch.no_grad()
def weight_similarity(model: SSALModel) -> np.ndarray:
    """A C x C confusion-like matrix from f's class weights: max(cos(w_a, w_b), 0), zero diagonal."""
    w = _class_layer(model.backbone, model.num_classes).weight.detach().float()
    w = torch.nn.functional.normalize(w, dim=1)
    s = (w @ w.T).clamp_min(0.0)
    s.fill_diagonal_(0.0)
    return s.cpu().double().numpy()


class OnlineGrouping(L.Callback):
    """Makes the groupings of every branch from the model being trained, at ``group_epoch`` (and later).

    Args:
        branches: the branch configs ({at, k, ...}) in model order.
        source: ``online`` (validation confusion of f), ``weights`` (similarity of f's class weights) or ``probe``
            (a linear probe on f's frozen features, before the first step: ``group_epoch`` and ``regroup_every`` 0).
        group_epoch: epochs of main-only training before the groups exist (a float).
        regroup_every: epochs between later recomputations (0: never).
        criterion, seed, refine, size_margin: how the balanced clustering groups (``group_from_confusion``).
        paths: the run directory (``groupings/g*.json`` are written there by rank 0).
        class_names: names stored in the groupings.
    """

    def __init__(
        self,
        branches: list[dict[str, Any]],
        source: str,
        group_epoch: float,
        regroup_every: float = 0.0,
        criterion: str = "join",
        seed: int = 0,
        refine: bool = False,
        size_margin: float | None = None,
        paths: RunPaths | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        self.branches, self.source = branches, source
        if source == "probe":  # the probe's groups exist before step 1, made once
            group_epoch, regroup_every = 0.0, 0.0
        self.group_epoch, self.regroup_every = float(group_epoch), float(regroup_every)
        self.criterion, self.seed, self.refine, self.size_margin = criterion, seed, refine, size_margin
        self.paths, self.class_names = paths, class_names
        self.done_steps: list[int] = []  # global steps at which groups were made
        self.groupings: list[dict[str, Any]] = []  # the current groupings (to_dict), empty before E0
        self.pass_flops = 0  # FLOPs of the confusion passes (counted as training compute)
        self._steps_per_epoch = 0

    @classmethod
    def from_config(
        cls,
        branches: list[dict[str, Any]],
        s: SSALConfig,
        paths: RunPaths | None = None,
        class_names: list[str] | None = None,
    ) -> OnlineGrouping:
        """The callback of a run's ``ssal`` config section."""
        return cls(branches, str(s.groupings), s.group_epoch, s.regroup_every, s.criterion, s.grouping_seed,
                   s.refine, s.size_margin, paths, class_names)  # fmt: skip

    # --- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"done_steps": list(self.done_steps), "groupings": list(self.groupings), "pass_flops": self.pass_flops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done_steps = [int(s) for s in state.get("done_steps", [])]
        self.groupings = list(state.get("groupings", []))
        self.pass_flops = int(state.get("pass_flops", 0))

    @property
    def grouped(self) -> bool:
        """Whether the groups exist (the branches train)."""
        return bool(self.done_steps)

    def plan(self, steps_per_epoch: int, max_steps: int) -> list[tuple[int, float]]:
        """(global step, the epoch it stands for) of each time groups are made: E0, E0 + N, E0 + 2N, ... epochs
        (N = ``regroup_every``), each rounded to the nearest step from its own epoch, so rounding never drifts."""
        if 0 < self.regroup_every * steps_per_epoch < 1:
            raise SSALError(
                f"ssal.regroup_every={self.regroup_every:g} epochs is less than one step ({steps_per_epoch} steps "
                "per epoch); regroup at most once per step"
            )
        out: list[tuple[int, float]] = []
        j = 0
        while True:
            epoch = self.group_epoch + j * self.regroup_every
            step = max(int(round(epoch * steps_per_epoch)), 0)
            if step >= max_steps or (j and self.regroup_every <= 0):
                return out
            if not out or step > out[-1][0]:
                out.append((step, epoch))
            j += 1

    def schedule(self, steps_per_epoch: int, max_steps: int) -> list[int]:
        """The global steps at which groups are made (``plan``)."""
        return [s for s, _ in self.plan(steps_per_epoch, max_steps)]

    # --- hooks -----------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps_per_epoch = spe = int(trainer.num_training_batches)
        plan = self.plan(spe, spe * int(trainer.max_epochs or 1))
        if not plan and not self.grouped:
            raise SSALError(
                f"ssal.group_epoch={self.group_epoch:g} is step {round(self.group_epoch * spe)} of "
                f"{spe * int(trainer.max_epochs or 1)} ({spe} per epoch): no step is left to train the branches; "
                "lower ssal.group_epoch"
            )
        if any(abs(step - epoch * spe) > 1e-6 for step, epoch in plan):  # say where a fraction of an epoch lands
            at = ", ".join(f"{e:g} -> step {s} (epoch {s / spe:.3g})" for s, e in plan[:4])
            log.info("online groups at epoch %s%s; %d steps per epoch", at, " ..." * (len(plan) > 4), spe)
        pl_module.with_branches = self.grouped
        if self.grouped:  # resumed after E0: gamma came back with the state dict; the metadata from our state
            pl_module.meta["groupings"] = list(self.groupings)
        else:
            pl_module.meta["groupings_pending"] = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step in self.done_steps:
            return
        max_steps = self._steps_per_epoch * int(trainer.max_epochs or 1)
        if step in self.schedule(self._steps_per_epoch, max_steps):
            self.regroup(trainer, pl_module)

    # --- the work ----------------------------------------------------------------------------------------------
    def regroup(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[Grouping]:
        """Make the groupings now from the current f, load them into the model and the loss, write them."""
        model: SSALModel = pl_module.model
        C = model.num_classes
        epoch = trainer.global_step / max(self._steps_per_epoch, 1)
        info: dict[str, Any] = {"online": True, "group_epoch": round(epoch, 4), "step": int(trainer.global_step)}
        if self.source == "online":
            dm = trainer.datamodule
            loader = getattr(dm, "val_loader", None) if dm is not None else None
            if loader is None:
                raise SSALError("ssal.groupings=online needs a validation split (data.val_fraction > 0)")
            ctx = trainer.precision_plugin.forward_context
            conf, n = validation_confusion(model, loader, C, ctx)
            summed = trainer.strategy.reduce(torch.from_numpy(conf).double().to(pl_module.device), reduce_op="sum")
            conf = summed.cpu().numpy()
            self.pass_flops += int(forward_flops_per_sample(model) * n * trainer.world_size)
            acc = float(np.trace(conf) / max(conf.sum(), 1.0))
            info["val_f_top1"] = round(100.0 * acc, 2)
            src = f"online:val-confusion@epoch{epoch:.2f}"
        elif self.source == "probe":
            from .probe import run_probe

            conf, flops, probe_info = run_probe(trainer, pl_module)
            self.pass_flops += int(flops)
            info.update(probe_info)
            src = "probe"
        else:
            conf = weight_similarity(model)
            src = f"online:class-weights@epoch{epoch:.2f}"
        gs = []
        for b in self.branches:
            g = group_from_confusion(
                conf, int(b["k"]), self.criterion, self.seed, self.refine, self.size_margin, self.class_names, src
            )
            gs.append(Grouping(g.assignment, g.k, g.criterion, g.seed, g.source, g.class_names, {**g.extra, **info}))
        self._load(pl_module, gs)
        self.done_steps.append(int(trainer.global_step))
        if trainer.is_global_zero and self.paths is not None:
            for i, g in enumerate(gs):
                g.save(self.paths.grouping(i))
            names = {"online": "f's validation confusion", "probe": "a linear probe"}
            what = names.get(self.source, "f's class weights")
            ks = ",".join(str(g.k) for g in gs)
            log.info("epoch %.2f: %d online grouping(s) from %s (%s, k=%s)", epoch, len(gs), what, self.criterion, ks)
        return gs

    def _load(self, pl_module: L.LightningModule, gs: list[Grouping]) -> None:
        model: SSALModel = pl_module.model
        for i, (b, g) in enumerate(zip(model.branches, gs, strict=True)):
            for gamma in (b.gamma, getattr(pl_module.loss, f"gamma{i}")):  # the model's and the loss's buffers
                gamma.copy_(g.as_tensor().to(gamma.device))
        pl_module.with_branches = True
        self.groupings = [g.to_dict() for g in gs]
        pl_module.meta["groupings"] = list(self.groupings)
        pl_module.meta.pop("groupings_pending", None)
