"""What Lightning runs: the LightningModule that trains an ``SSALModel`` with the loss of paper Eq. 3 (SGD, the
learning-rate schedule) and validates f, each g_i and +JP (Sec. 3.4), and the LightningDataModule of its loaders."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from ..architecture import SSALModel
from ..config import OptimConfig, ScheduleConfig
from ..errors import SSALError
from ..features import classifier_names
from ..loss import SSALLoss
from ..prediction import SSALMetrics

if TYPE_CHECKING:  # the engine receives the loader factory; it never builds one
    from ..build import Loaders

__all__ = [
    "SSALDataModule",
    "SSALTask",
    "TrainingDivergedError",
    "build_optimizer",
    "compiled_gradient_problem",
    "lr_factor",
    "lr_lambdas",
]


def lr_factor(s: ScheduleConfig, epochs: int, t: float) -> float:
    """Multiplier of the peak learning rate at (fractional) epoch ``t`` in [0, epochs].

    triangular: linear 0 -> 1 up to ``peak_epoch``, then linear to ``final_lr`` at ``epochs`` (the authors' CIFAR
    schedule; paper Table 2: 20 epochs peaking at 8). warmup_linear / warmup_cosine: linear warm-up for
    ``warmup_epochs``, then linear / cosine decay to ``final_lr``. step: warm-up, then x ``gamma`` at each milestone.
    """
    t = min(max(t, 0.0), float(epochs))
    if s.name == "constant":
        return 1.0
    if s.name == "triangular":
        if t < s.peak_epoch:
            return t / s.peak_epoch
        return 1.0 - (1.0 - s.final_lr) * (t - s.peak_epoch) / max(epochs - s.peak_epoch, 1e-8)
    if s.warmup_epochs > 0 and t < s.warmup_epochs:
        return t / s.warmup_epochs
    if s.name == "step":
        return s.gamma ** sum(t >= m for m in s.milestones)
    p = (t - s.warmup_epochs) / max(epochs - s.warmup_epochs, 1e-8)  # progress of the decay in [0, 1]
    if s.name == "warmup_cosine":
        return s.final_lr + (1.0 - s.final_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - (1.0 - s.final_lr) * p


def param_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The trainable parameters of an ``SSALModel`` by role: ``classifier`` (f's output layer), ``backbone``
    (the rest of f) and ``branches`` (the g_i). Any other module's parameters count as ``classifier``."""
    out: dict[str, list[torch.nn.Parameter]] = {"classifier": [], "backbone": [], "branches": []}
    backbone = getattr(model, "backbone", None)
    heads = tuple(f"backbone.{n}." for n in classifier_names(backbone)) if backbone is not None else ()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("branches."):
            out["branches"].append(p)
        elif name.startswith("backbone.") and not name.startswith(heads):
            out["backbone"].append(p)
        else:
            out["classifier"].append(p)
    return out


def build_optimizer(model: torch.nn.Module, o: OptimConfig) -> torch.optim.SGD:
    """SGD with momentum / Nesterov. Weight decay on kernels only unless ``decay_norm_and_bias``.

    The authors' Keras ``l2(wd)`` adds wd * ||w||^2 to the loss, whose gradient is 2 * wd * w: it equals
    ``weight_decay = 2 * wd`` in PyTorch. Parameter groups carry a ``role`` (classifier, backbone, branches); the
    backbone's learning rate is scaled by ``backbone_lr_scale``, the branches' by ``branch_lr_scale``.
    """
    scale = {"classifier": 1.0, "backbone": o.backbone_lr_scale, "branches": o.branch_lr_scale}
    roles = param_groups(model)
    groups = []
    for role, params in roles.items():
        decay = [p for p in params if p.ndim > 1 or o.decay_norm_and_bias]
        no_decay = [p for p in params if not (p.ndim > 1 or o.decay_norm_and_bias)]
        lr = o.lr * scale[role]
        groups.append({"params": decay, "weight_decay": o.weight_decay, "lr": lr, "role": role})
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr, "role": role})
    return torch.optim.SGD([g for g in groups if g["params"]], lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def lr_lambdas(
    opt: torch.optim.Optimizer, s: ScheduleConfig, epochs: int, steps_per_epoch: int, freeze_epochs: float = 0.0
) -> list[Any]:
    """One LambdaLR factor per parameter group: the schedule, and 0 for the backbone while it is frozen.

    One function of the fractional epoch rather than torch's chained schedulers: five shapes, per-step updates,
    a frozen backbone and resume (LambdaLR's state is the step count) each stay one line.
    """

    def factor(step: int) -> float:
        return lr_factor(s, epochs, (step + 1) / steps_per_epoch)

    def backbone_factor(step: int) -> float:
        return 0.0 if step / steps_per_epoch < freeze_epochs else factor(step)

    return [backbone_factor if g.get("role") == "backbone" else factor for g in opt.param_groups]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


# plain tensors and lists, so checkpoints stay weights_only-loadable
def rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python RNG states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_py = s["python"]
    random.setstate((version, tuple(state), gauss_py))


def _stochastic(model: torch.nn.Module) -> bool:
    """Whether the model has an active dropout-like layer (then two passes draw different masks)."""
    dropout = (torch.nn.modules.dropout._DropoutNd,)
    return any(
        (isinstance(m, dropout) or type(m).__name__ in ("DropPath", "StochasticDepth"))
        and float(getattr(m, "p", getattr(m, "drop_prob", 0.0)) or 0.0) > 0
        for m in model.modules()
    )


def compiled_gradient_problem(
    model: SSALModel, compiled: Any, loss: SSALLoss, x: torch.Tensor, y: torch.Tensor, with_branches: bool = True
) -> str | None:
    """What is wrong with ``torch.compile``'s gradients of one training step, or None if they agree with eager's.

    Both passes run on the same batch in the caller's autocast context; the model's buffers (batch-norm statistics)
    are restored and no ``.grad`` is touched (``torch.autograd.grad``, so DDP's hooks do not fire). Wrong means
    non-finite where eager's gradients are finite or, for a model without active dropout, a cosine similarity
    below 0.9 between the two gradient vectors.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None  # nothing trains: no gradient to compare
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    grads = []
    for forward in (model.forward, compiled):
        with torch.enable_grad():
            total = loss(forward(x, with_branches=with_branches), y).total
            g = torch.autograd.grad(total, params, allow_unused=True)
        grads.append(torch.cat([(torch.zeros_like(p) if d is None else d).float().flatten() for p, d in
                                zip(params, g, strict=True)]))  # fmt: skip
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    eager, comp = grads
    if not bool(torch.isfinite(eager).all()):
        return None  # eager's own step is not finite: the divergence check reports that
    if not bool(torch.isfinite(comp).all()):
        bad = int((~torch.isfinite(comp)).sum())
        return f"torch.compile's gradients have {bad} non-finite values where the eager model's are finite"
    if _stochastic(model):
        return None
    cos = float(torch.nn.functional.cosine_similarity(eager, comp, dim=0, eps=1e-12))
    if cos < 0.9:
        return f"torch.compile's gradients point elsewhere than the eager model's (cosine similarity {cos:.3f})"
    return None


class SSALTask(L.LightningModule):
    """Trains an ``SSALModel`` with ``SSALLoss``; validates with ``SSALMetrics`` (f, each g_i, +JP).

    Args:
        model: the SSAL model (possibly without branches: a baseline).
        loss: the loss of paper Eq. 3 for the model's groupings.
        eta: eta_i of the joint prediction used in the validation metrics.
        optim, schedule, epochs: optimiser, learning-rate schedule and its length.
        compile: run the model through ``torch.compile`` (the uncompiled model is what checkpoints hold).
        meta: JSON-like metadata stored in every checkpoint under ``"ssal"`` (config, groupings, class names).
        check_every: steps between the (all-rank) checks for a NaN/Inf loss.
    """

    def __init__(
        self,
        model: SSALModel,
        loss: SSALLoss,
        eta: list[float],
        *,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        epochs: int,
        compile: bool = False,
        meta: dict[str, Any] | None = None,
        check_every: int = 50,
    ) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.eta, self.optim_cfg, self.schedule_cfg, self.epochs = eta, optim, schedule, epochs
        self.meta = dict(meta or {})
        self.check_every = max(int(check_every), 1)
        # a compiled bound method is a plain attribute, not a submodule: checkpoints hold only the model's keys
        self.compiled = torch.compile(model.forward) if compile else None
        self.with_branches = True  # False until an online grouping has made the groups (ssal.online)
        self.compile_checked: bool | None = None  # the with_branches value whose compiled graph was checked
        self.val_result: dict[str, float] | None = None  # this epoch's validation metrics, if it validated
        self.start_epoch = 0  # epochs done before this session (set when resuming)
        self.nonfinite = torch.zeros(())

    def forward(self, x: torch.Tensor) -> Any:
        return (self.compiled or self.model)(x, with_branches=self.with_branches)

    def loss_names(self) -> list[str]:
        """The training-loss columns of metrics.csv: the total, f's term and each branch's term."""
        return ["train_loss", "train_loss_f", *(f"train_loss_{n}" for n in self.model.branch_names)]

    # training ---------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)
        self.nonfinite = torch.zeros((), device=self.device)
        self.val_result = None
        if self.trainer.max_epochs is not None and self.current_epoch + 1 >= self.trainer.max_epochs:
            self.trainer.check_val_every_n_epoch = 1  # trainer.val_every: the last epoch is always validated

    def on_train_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.compiled is not None and self.compile_checked is not self.with_branches:
            self.check_compiled(*batch)

    def check_compiled(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Stop (on every rank) before the first compiled step if its gradients are wrong: torch.compile has bugs
        (e.g. NaN gradients of ``amax`` after GELU under bf16 autocast on the CPU, torch 2.14)."""
        self.compile_checked = self.with_branches
        with self.trainer.precision_plugin.forward_context():
            problem = compiled_gradient_problem(self.model, self.compiled, self.loss, x, y, self.with_branches)
        if self.trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
            raise SSALError(
                f"trainer.compile: {problem or 'another rank found wrong compiled gradients'} on the first batch "
                f"(a torch.compile bug for this model at precision {self.trainer.precision}); train with "
                "trainer.compile=false, or try trainer.precision=32"
            )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        parts = self.loss(self(x), y)
        b = float(y.shape[0])
        aux = list(parts.aux) + [torch.zeros_like(parts.main)] * (len(self.model.branches) - len(parts.aux))
        terms = [parts.total, parts.main, *aux]  # aux 0 while the branches are off
        # float64 sums weighted by batch size, summed over ranks: the epoch means are sum / train_samples
        sums = {f"sum/{k}": v.detach().double() * b for k, v in zip(self.loss_names(), terms, strict=True)}
        sums["sum/train_samples"] = torch.tensor(b, dtype=torch.float64, device=self.device)
        self.log_dict(sums, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, logger=False)
        self.log("train/loss", parts.total.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.nonfinite += ~torch.isfinite(parts.total.detach())
        if (batch_idx + 1) % self.check_every == 0:
            self.raise_if_diverged()
        return parts.total

    def raise_if_diverged(self) -> None:
        """Stop (on every rank at once) if any rank saw a NaN/Inf loss since the epoch started."""
        if self.trainer.strategy.reduce_boolean_decision(bool(self.nonfinite > 0), all=False):
            raise TrainingDivergedError(
                f"the loss became NaN/Inf in epoch {self.current_epoch + 1} (step {self.global_step}); "
                "stopping. The last good checkpoint is kept; lower optim.lr or use trainer.precision=32"
            )

    def epoch_train_losses(self) -> dict[str, float]:
        """Mean training losses of the finished epoch over all ranks, and the global sample count."""
        m = self.trainer.callback_metrics
        n = float(m["sum/train_samples"])
        return {**{k: float(m[f"sum/{k}"]) / max(n, 1.0) for k in self.loss_names()}, "train_samples": int(n)}

    # validation -----------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        on = self.with_branches  # off before the groups of an online grouping exist
        self.metrics = SSALMetrics(self.model.gammas if on else [], self.eta if on else [])
        self.val_loss_sum = torch.zeros(2, dtype=torch.float64, device=self.device)  # main CE sum, samples

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        self.metrics.update(out, y)
        ce = torch.nn.functional.cross_entropy(out.main.float(), y, reduction="sum")
        self.val_loss_sum += torch.stack([ce.double(), torch.tensor(float(y.numel()), device=ce.device).double()])

    def on_validation_epoch_end(self) -> None:
        # SSALMetrics' counts are one vector: one all-reduce sums every accuracy's count exactly
        strat = self.trainer.strategy
        self.metrics.counts = strat.reduce(self.metrics.counts.to(self.device), reduce_op="sum").cpu()
        vl = strat.reduce(self.val_loss_sum, reduce_op="sum").cpu()
        res = {"val_loss": float(vl[0]) / max(float(vl[1]), 1.0), **self.metrics.compute()}
        res["val_samples"] = self.metrics.num_samples
        self.val_result = res
        # the same on every rank: logged for TensorBoard and the checkpoint monitor, no further reduction
        self.log_dict(
            {f"val/{k}": torch.tensor(float(v), dtype=torch.float64, device=self.device) for k, v in res.items()}
        )

    # optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.model, self.optim_cfg)
        steps = max(int(self.trainer.estimated_stepping_batches // max(self.epochs, 1)), 1)
        lambdas = lr_lambdas(opt, self.schedule_cfg, self.epochs, steps, self.optim_cfg.freeze_backbone_epochs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # checkpoint metadata ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssal"] = {**self.meta, "rng": rng_state(), "epochs_done": self.current_epoch + 1}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.start_epoch = int(checkpoint.get("ssal", {}).get("epochs_done", 0))  # read by the train loader
        rng = checkpoint.get("ssal", {}).get("rng")
        if rng:
            set_rng_state(rng)


class SSALDataModule(L.LightningDataModule):
    """Makes each rank's loaders with the run's loader factory once the strategy is set up (so every rank knows
    its shard)."""

    def __init__(self, data: Any, loaders: Loaders) -> None:
        super().__init__()
        self.data, self.loaders = data, loaders
        self.train_loader: Any = None
        self.val_loader: Any = None

    def setup(self, stage: str) -> None:
        if self.train_loader is not None:
            return
        t = self.trainer
        rank, ws, dev = (t.global_rank, t.world_size, t.strategy.root_device) if t else (0, 1, "cpu")
        kw = {"device": dev, "rank": rank, "world_size": ws}
        self.train_loader = self.loaders("train", train=True, **kw)
        if self.data.val is not None:
            self.val_loader = self.loaders("val", train=False, **kw)
        if len(self.train_loader) == 0:
            raise SSALError(f"data.batch_size={self.loaders.batch_size} leaves no full batch on rank {rank}")
        if self.val_loader is not None and len(self.val_loader) == 0:
            raise SSALError("the validation split is empty: nothing to choose the best checkpoint by")

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffling (and the augmentation of the array loader) for ``epoch``."""
        loader = self.train_loader
        target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)  # DeviceLoader or sampler
        if hasattr(target, "set_epoch"):
            target.set_epoch(epoch)

    def train_dataloader(self) -> Any:
        # Lightning may make the first iterator before the first on_train_epoch_start: on resume, epoch E's order
        task = self.trainer.lightning_module if self.trainer is not None else None
        self.set_epoch(int(getattr(task, "start_epoch", 0)))
        return self.train_loader

    def val_dataloader(self) -> Any:
        return self.val_loader if self.val_loader is not None else []
