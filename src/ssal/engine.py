"""The training engine: a LightningModule around ``SSALModel`` + ``SSALLoss`` + ``SSALMetrics``, and the Trainer.

One code path serves 1 CPU core to N GPUs on M nodes (Lightning: DDP, gloo on CPU, SLURM, precision). The engine
adds no model logic: the loss is paper Eq. 3 (``ssal.loss``), the joint prediction Sec. 3.4 (``ssal.prediction``).
Batch iterables are passed to Lightning as they are (``use_distributed_sampler=False``): every rank takes its own
shard through ``rank``/``world_size`` (``DeviceLoader``) or a DistributedSampler (ImageFolder).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from . import signals
from .architecture import SSALModel
from .config import Config, OptimConfig, ScheduleConfig
from .errors import SSALError
from .hardware import resolve_precision
from .io import check_output_path
from .loss import SSALLoss
from .prediction import SSALMetrics
from .runs import (
    RunPaths,
    check_resumable,
    copy_atomic,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    state_dict_mismatch,
    write_metrics,
)

__all__ = [
    "AtomicCheckpointIO",
    "RunWriter",
    "SSALDataModule",
    "SSALTask",
    "TrainingDivergedError",
    "build_optimizer",
    "build_trainer",
    "checkpoint_meta",
    "ensure_writable_run",
    "fit",
    "lr_factor",
    "lr_lambdas",
    "param_groups",
    "rng_state",
    "set_rng_state",
]

log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Route Lightning's messages through the root logger once (no duplicate lines), warnings only unless -v."""
    debug = logging.getLogger().level <= logging.DEBUG
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.INFO if debug else logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


# --- optimisation ----------------------------------------------------------------------------------------
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
    from .features import classifier_names

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
    ``weight_decay = 2 * wd`` in PyTorch. With lr scales or freezing, parameter groups carry a ``role``
    (classifier, backbone, branches); the backbone's learning rate is scaled by ``backbone_lr_scale``, the
    branches' by ``branch_lr_scale``. Without, there is one role, ``all``.
    """
    scale = {"classifier": 1.0, "backbone": o.backbone_lr_scale, "branches": o.branch_lr_scale}
    plain = o.backbone_lr_scale == 1.0 and o.branch_lr_scale == 1.0 and o.freeze_backbone_epochs == 0
    roles = {"all": [p for p in model.parameters() if p.requires_grad]} if plain else param_groups(model)
    scale["all"] = 1.0  # one role: the same two groups (and parameter order) as checkpoints of earlier versions
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
    """One LambdaLR factor per parameter group: the schedule, and 0 for the backbone while it is frozen."""

    def factor(step: int) -> float:
        return lr_factor(s, epochs, (step + 1) / steps_per_epoch)

    def backbone_factor(step: int) -> float:
        return 0.0 if step / steps_per_epoch < freeze_epochs else factor(step)

    return [backbone_factor if g.get("role") == "backbone" else factor for g in opt.param_groups]


# --- RNG state (plain tensors and lists, so checkpoints stay weights_only-loadable) ----------------------
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


# --- the LightningModule ------------------------------------------------------------------------------------
class SSALTask(L.LightningModule):
    """Trains an ``SSALModel`` with ``SSALLoss``; validates with ``SSALMetrics`` (f, each g_i, +JP).

    Args:
        model: the SSAL model (possibly without branches: a baseline).
        loss: the loss of paper Eq. 3 for the model's groupings.
        eta: eta_i of the joint prediction used in the validation metrics.
        optim, schedule, epochs: optimiser, learning-rate schedule and its length.
        compile: run the model through ``torch.compile`` (the uncompiled model is what checkpoints hold).
        meta: JSON-like metadata stored in every checkpoint under ``"ssal"`` (config, groupings, class names).
    """

    def __init__(
        self,
        model: SSALModel,
        loss: SSALLoss,
        eta: list[float],
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
        self.__dict__["_net"] = torch.compile(model) if compile else model  # not a registered submodule
        self.metrics: SSALMetrics | None = None
        self.val_result: dict[str, float] | None = None
        self.start_epoch = 0  # epochs done before this session (set when resuming)
        self._new_epoch_sums()

    def _new_epoch_sums(self) -> None:
        n = len(self.model.branches)
        self.train_sums = torch.zeros(3 + n, dtype=torch.float64)  # total, main, aux..., samples (weighted sums)
        self.val_loss_sum = torch.zeros(2, dtype=torch.float64)  # main CE sum, samples
        self.nonfinite = torch.zeros((), dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> Any:
        return self.__dict__["_net"](x)

    # training ---------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)
        self._new_epoch_sums()
        self.train_sums, self.val_loss_sum = self.train_sums.to(self.device), self.val_loss_sum.to(self.device)
        self.nonfinite = self.nonfinite.to(self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        parts = self.loss(self(x), y)
        b = float(y.shape[0])
        with torch.no_grad():
            aux = list(parts.aux) + [torch.zeros_like(parts.main)] * (len(self.model.branches) - len(parts.aux))
            terms = torch.stack([parts.total, parts.main, *aux]).detach().double()  # aux 0 while branches are off
            self.train_sums[:-1] += terms * b
            self.train_sums[-1] += b
            self.nonfinite += (~torch.isfinite(parts.total.detach())).double()
        if (batch_idx + 1) % self.check_every == 0:
            self.raise_if_diverged()
        self.log("train/loss", parts.total.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return parts.total

    def raise_if_diverged(self) -> None:
        """Stop (on every rank at once) if any rank saw a NaN/Inf loss since the epoch started."""
        bad = self.trainer.strategy.reduce(self.nonfinite.clone(), reduce_op="sum")
        if float(bad) > 0:
            raise TrainingDivergedError(
                f"the loss became NaN/Inf in epoch {self.current_epoch + 1} (step {self.global_step}); "
                "stopping. The last good checkpoint is kept; lower optim.lr or use trainer.precision=32"
            )

    def epoch_train_losses(self) -> dict[str, float]:
        """Mean training losses of the finished epoch over all ranks, and the global sample count."""
        s = self.trainer.strategy.reduce(self.train_sums.clone(), reduce_op="sum").cpu()
        n = max(float(s[-1]), 1.0)
        out = {"train_loss": float(s[0]) / n, "train_loss_f": float(s[1]) / n}
        for i, name in enumerate(self.model.branch_names):
            out[f"train_loss_{name}"] = float(s[2 + i]) / n
        out["train_samples"] = int(s[-1])
        return out

    # validation -----------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        on = self.model.branches_enabled  # off before the groups of an online grouping exist
        self.metrics = SSALMetrics(self.model.gammas if on else [], self.eta if on else [])
        self.val_loss_sum = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        assert self.metrics is not None
        self.metrics.update(out, y)
        ce = torch.nn.functional.cross_entropy(out.main.float(), y, reduction="sum")
        self.val_loss_sum += torch.stack([ce.double(), torch.tensor(float(y.numel()), device=ce.device).double()])

    def on_validation_epoch_end(self) -> None:
        assert self.metrics is not None
        strat = self.trainer.strategy
        self.metrics.counts = strat.reduce(self.metrics.counts.to(self.device), reduce_op="sum").cpu()
        vl = strat.reduce(self.val_loss_sum.clone(), reduce_op="sum").cpu()
        res = {"val_loss": float(vl[0]) / max(float(vl[1]), 1.0), **self.metrics.compute()}
        res["val_samples"] = self.metrics.num_samples
        self.val_result = res
        self.log_dict({f"val/{k}": float(v) for k, v in res.items()}, sync_dist=False, rank_zero_only=True)

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


# --- data ------------------------------------------------------------------------------------------------------
class SSALDataModule(L.LightningDataModule):
    """Builds each rank's loaders after the strategy is set up (so every rank knows its shard)."""

    def __init__(self, cfg: Config, data: Any) -> None:
        super().__init__()
        self.cfg, self.data = cfg, data
        self.train_loader: Any = None
        self.val_loader: Any = None

    def setup(self, stage: str) -> None:
        from .build import make_loader

        if self.train_loader is not None:
            return
        t = self.trainer
        rank, ws, dev = (t.global_rank, t.world_size, t.strategy.root_device) if t else (0, 1, "cpu")
        self.train_loader = make_loader(
            self.cfg, self.data, self.data.train, train=True, device=dev, rank=rank, world_size=ws
        )
        if self.data.val is not None:
            self.val_loader = make_loader(
                self.cfg, self.data, self.data.val, train=False, device=dev, rank=rank, world_size=ws
            )
        if len(self.train_loader) == 0:
            raise SSALError(f"data.batch_size={self.cfg.data.batch_size} leaves no full batch on rank {rank}")
        if self.val_loader is not None and len(self.val_loader) == 0:
            raise SSALError("the validation split is empty: nothing to choose the best checkpoint by")

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffling (and the augmentation of the array loader) for ``epoch``."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        elif hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def train_dataloader(self) -> Any:
        # Lightning may make the first iterator before the first on_train_epoch_start: on resume, epoch E's order
        task = self.trainer.lightning_module if self.trainer is not None else None
        self.set_epoch(int(getattr(task, "start_epoch", 0)))
        return self.train_loader

    def val_dataloader(self) -> Any:
        return self.val_loader if self.val_loader is not None else []


# --- run directory writer: metrics.csv, checkpoints, NaN guard ------------------------------------------------
class RunWriter(L.Callback):
    """At the end of each epoch: NaN check, one metrics.csv row, last.ckpt and (if better) best.ckpt; rank 0 writes.

    The row is written before the checkpoint, so after a crash the resumed epoch simply overwrites its row:
    metrics.csv never holds duplicated or missing epochs. An improved epoch is saved as best.ckpt first, then copied
    to last.ckpt, so last.ckpt never runs ahead of best.ckpt.
    """

    def __init__(self, paths: RunPaths, monitor: str, on_setup: Any = None, compute: Any = None) -> None:
        self.paths, self.monitor, self.on_setup, self.compute = paths, monitor, on_setup, compute
        self.best = -math.inf
        self.wall = 0.0  # training seconds summed over all sessions of this run
        self._t0 = self._tval = 0.0
        self.rows: list[dict[str, Any]] = []
        self.saved_epochs = 0  # epochs held by last.ckpt

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wall": self.wall}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wall = float(state["best"]), float(state["wall"])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.on_setup is not None:
            self.on_setup()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch  # epochs finished before this session (0 unless resumed)
        self.saved_epochs = done
        self.rows = [r for r in read_metrics(self.paths.metrics) if int(r["epoch"]) <= done]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._tval = time.perf_counter()
        pl_module.val_result = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        signals.check()  # SIGINT/SIGTERM stop here, between steps: the resumed run redoes this epoch exactly

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        signals.check()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tval = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.raise_if_diverged()
        now = time.perf_counter()
        train_s = (self._tval if self._tval > self._t0 else now) - self._t0
        self.wall += now - self._t0
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        row.update(pl_module.epoch_train_losses())
        row.update(pl_module.val_result or {})
        row.update({"epoch_seconds": now - self._t0, "train_img_per_s": row["train_samples"] / max(train_s, 1e-9)})
        row["wall_seconds"] = self.wall
        if self.compute is not None:
            row["train_flops"] = self.compute.total
        improved = pl_module.val_result is not None and row.get(self.monitor, -math.inf) > self.best
        if improved:
            self.best = float(row[self.monitor])
        if trainer.is_global_zero:
            self.rows.append(row)
            write_metrics(self.paths.metrics, self.rows)
            if trainer.logger is not None:
                trainer.logger.log_metrics({f"epoch/{k}": float(v) for k, v in row.items()}, step=row["epoch"])
        # best before last: a crash between the two leaves last.ckpt at the previous epoch, so the resumed run redoes
        # this epoch and rewrites best.ckpt (the other order would lose a best epoch whose score is already recorded)
        trainer.save_checkpoint(self.paths.best if improved else self.paths.last, weights_only=False)
        if improved and trainer.is_global_zero:
            copy_atomic(self.paths.best, self.paths.last)
        self.saved_epochs = row["epoch"]
        if trainer.is_global_zero:
            log.info(_summary(row))
        signals.check()  # a signal that came while the row and checkpoints were written stops here


def _summary(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}"]
    for k in ("f_top1", "jp_top1"):
        if k in row:
            parts.append(f"{k} {row[k]:.2f}")
    parts.append(f"{row['train_img_per_s']:.0f} img/s")
    return " | ".join(parts)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically and read with ``weights_only=True`` (corrupt files raise ``SSALError``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location="cpu")


def ema_callback(decay: float) -> L.Callback:
    """Lightning's weight averaging as an exponential moving average of every float parameter and buffer.

    Integer buffers (gamma, BN batch counters) are copied, not averaged. Validation and checkpoints use the average.
    """
    from lightning.pytorch.callbacks import WeightAveraging

    def ema(avg: torch.Tensor, cur: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return avg + (cur - avg) * (1.0 - decay) if avg.is_floating_point() else cur

    return WeightAveraging(avg_fn=ema, use_buffers=True)


def build_trainer(
    cfg: Config, paths: RunPaths, writer: RunWriter, has_val: bool, callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    """The Lightning Trainer of a run: devices, nodes, strategy, precision, logging, progress bar."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from .online import ONLINE_SOURCES

    t = cfg.trainer
    strategy = t.strategy
    many = t.num_nodes > 1 or t.devices == "auto" or int(t.devices) > 1
    if cfg.ssal.groupings in ONLINE_SOURCES and cfg.has_branches and many and strategy in ("auto", "ddp"):
        strategy = "ddp_find_unused_parameters_true"  # the branches take no part in steps before group_epoch
    try:
        return L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=strategy,
            precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]
            max_epochs=t.epochs,
            limit_train_batches=t.limit_train_batches,
            logger=TensorBoardLogger(save_dir=str(paths.root), name="tb", version="", default_hp_metric=False),
            callbacks=[*(callbacks or []), writer],
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=False,
            enable_progress_bar=t.progress_bar and sys.stderr.isatty(),  # no bar spam in log files
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=t.val_every,
            limit_val_batches=None if has_val else 0,
            log_every_n_steps=t.log_every_n_steps,
            deterministic=t.deterministic,
            use_distributed_sampler=False,
            default_root_dir=str(paths.root),
        )
    except (ValueError, RuntimeError, TypeError, MisconfigurationException) as e:
        raise SSALError(f"trainer settings: {str(e).splitlines()[0]}") from None


def ensure_writable_run(paths: RunPaths, resume: bool) -> Path | None:
    """The checkpoint to resume from (or None); refuses to overwrite a trained run without ``--resume``."""
    if resume:
        if paths.last.is_file():
            check_resumable(load_checkpoint(paths.last), paths.last)  # a corrupt file fails here with one clear line
            read_metrics(paths.metrics, epochs=True)
            return paths.last
        log.warning("no checkpoint in %s: starting from scratch", paths.checkpoints)
        return None
    if paths.last.is_file():
        raise SSALError(f"{paths.root} already holds a trained run; pass --resume to continue it or set run_dir=...")
    return None


def checkpoint_meta(cfg: Config, data: Any, groupings: list[Any]) -> dict[str, Any]:
    """What every checkpoint of the run records besides the training state."""
    from . import __version__

    return {
        "version": __version__,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "variant"},
        "groupings": [g.to_dict() for g in groupings],
        "class_names": list(data.class_names) if data.class_names else None,
        "num_classes": int(data.num_classes),
        "mean": list(data.mean) if data.mean else None,
        "std": list(data.std) if data.std else None,
    }


@dataclass
class FitResult:
    """What ``fit`` produced: the run directory, the model's parameter count and the final metrics row."""

    run_dir: Path
    num_params: int
    last_row: dict[str, str] | None
    is_global_zero: bool = True


def _write_run_files(cfg: Config, paths: RunPaths, groupings: list[Any]) -> None:
    from .config import save_config

    save_config(cfg, paths.config)
    for i, g in enumerate(groupings):
        g.save(paths.grouping(i))


def _saved_groupings(cfg: Config, paths: RunPaths) -> None:
    """On resume, train with the groupings the run started with (not a re-derived one)."""
    files = sorted(paths.groupings_dir.glob("g*.json"), key=lambda p: int(p.stem[1:]))
    if files:
        cfg.ssal.groupings = [str(f) for f in files]


def fit(cfg: Config, *, resume: bool = False, dry_run: bool = False) -> FitResult:
    """Train the run described by ``cfg`` into ``cfg.run_dir`` (or, with ``dry_run``, only build the model)."""
    threads = torch.get_num_threads()
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    try:
        return _fit(cfg, resume, dry_run)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests, pipelines) keep their setting


def _fit(cfg: Config, resume: bool, dry_run: bool) -> FitResult:
    from .build import branch_configs, build_loss, build_model, eta_values, load_data, resolve_groupings
    from .compute import ComputeMeter
    from .online import ONLINE_SOURCES, OnlineGrouping

    quiet_lightning()
    paths = RunPaths(Path(cfg.run_dir))
    if not dry_run:
        check_output_path(paths.root, "dir")
    ckpt = None if dry_run else ensure_writable_run(paths, resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_data(cfg.data, ("train", "val"), dry_run=dry_run)
    if data.is_folder and not dry_run:  # a broken image is named now (or skipped), not found in the middle of an epoch
        from .data.folder import check_images

        splits = [Path(cfg.data.root) / s for s in ("train", "val", "test") if (Path(cfg.data.root) / s).is_dir()]
        check_images(splits, skip=cfg.data.skip_broken)
    online = cfg.ssal.groupings in ONLINE_SOURCES and cfg.has_branches
    if ckpt is not None and not online:
        _saved_groupings(cfg, paths)
    from_data = cfg.ssal.groupings in ("confusion", "superclasses")  # a dry run loads no data: placeholders
    groupings = resolve_groupings(cfg, data, placeholder=dry_run and from_data)
    model = build_model(cfg, data.num_classes, groupings, data)
    loss, eta = build_loss(cfg, model), eta_values(cfg, len(groupings))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %s with %d branch(es), %.2fM parameters", cfg.name, cfg.model.name, len(groupings), n_params / 1e6)
    if dry_run:
        return FitResult(paths.root, n_params, None)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    meta = checkpoint_meta(cfg, data, groupings)
    task = SSALTask(
        model,
        loss,
        eta,
        cfg.optim,
        cfg.schedule,
        cfg.trainer.epochs,
        cfg.trainer.compile,
        meta,
        check_every=cfg.trainer.log_every_n_steps,
    )
    monitor = "jp_top1" if groupings else "f_top1"
    callbacks: list[L.Callback] = []
    if online:
        s = cfg.ssal
        grouper = OnlineGrouping(
            branch_configs(cfg, data.num_classes), str(s.groupings), s.group_epoch, s.regroup_every,
            s.criterion, s.grouping_seed, s.refine, s.size_margin, paths, data.class_names,
        )  # fmt: skip
        callbacks.append(grouper)
        meter = ComputeMeter(extra=lambda: grouper.pass_flops)
    else:
        meter = ComputeMeter()
    callbacks.append(meter)
    if cfg.trainer.ema_decay > 0:
        callbacks.append(ema_callback(cfg.trainer.ema_decay))
    files = [] if online else groupings  # online groupings are written when they are made
    writer = RunWriter(paths, monitor, on_setup=lambda: _write_run_files(cfg, paths, files), compute=meter)
    trainer = build_trainer(cfg, paths, writer, has_val=data.val is not None, callbacks=callbacks)
    try:
        with signals.deferred():
            trainer.fit(task, datamodule=SSALDataModule(cfg, data), ckpt_path=ckpt, weights_only=True)
    except (signals.Interrupted, SIGTERMException) as e:
        stop = e if isinstance(e, signals.Interrupted) else signals.Interrupted(signal.SIGTERM)
        stop.run_dir, stop.epochs_saved = paths.root, writer.saved_epochs
        stop.epoch = writer.saved_epochs + 1 if writer.saved_epochs < cfg.trainer.epochs else None
        raise stop from None
    except MisconfigurationException as e:  # e.g. a limit_train_batches that leaves no batch
        raise SSALError(f"trainer settings: {str(e).splitlines()[0]}") from None
    except RuntimeError as e:
        if ckpt is not None and "state_dict" in str(e):  # resuming with a config that builds another model
            raise SSALError(f"{ckpt} does not match the config's model: {state_dict_mismatch(e)}") from None
        raise
    rows = read_metrics(paths.metrics)
    return FitResult(paths.root, n_params, rows[-1] if rows else None, trainer.is_global_zero)
