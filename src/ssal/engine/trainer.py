"""The Lightning Trainer of a run and its callbacks: metrics.csv, loggers, best/last checkpoints (atomic), EMA."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar, WeightAveraging
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from .. import signals
from ..config import Config
from ..errors import SSALError
from ..hardware import resolve_precision
from ..online import ONLINE_SOURCES
from ..runs import RunPaths, load_checkpoint, read_metrics, save_checkpoint, write_metrics
from .loggers import LoggerSync, build_loggers

__all__ = [
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "ImageProgressBar",
    "LastCheckpoint",
    "RunWriter",
    "build_trainer",
    "quiet_lightning",
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
    noise = ("treespec", "does not have many workers", "smaller than the logging interval", "sync_dist=True")
    # on resume the checkpoint folder holds files, and a moved run's paths differ (BestCheckpoint restores by value)
    for message in (*noise, "Checkpoint directory .* exists and is not empty", "The dirpath has changed"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")


class RunWriter(L.Callback):
    """At the end of each epoch: the NaN check, then one metrics.csv row (and TensorBoard ``epoch/*``), rank 0 writes.

    The checkpoints (best.ckpt by ``monitor``, then last.ckpt) are written after the row, so after a crash the
    resumed epoch simply overwrites its row: metrics.csv never holds duplicated or missing epochs. ``on_setup`` runs
    once on rank 0 when training starts; ``compute`` (a ``ComputeMeter``) gives the ``train_flops`` column.
    Not Lightning's ``CSVLogger``: metrics.csv holds exactly one row per finished epoch, written atomically and cut
    back to the last saved epoch when a run resumes.
    """

    def __init__(self, paths: RunPaths, monitor: str, on_setup: Any = None, compute: Any = None) -> None:
        self.paths, self.monitor, self.on_setup, self.compute = paths, monitor, on_setup, compute
        self.wall = 0.0  # training seconds summed over all sessions of this run
        self._t0 = self._tval = 0.0
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"wall": self.wall}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wall = float(state["wall"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.on_setup is not None:  # after the checks of setup, restore and earlier
            self.on_setup()  # callbacks (e.g. OnlineGrouping's schedule): a refused run has not written its files
        done = trainer.current_epoch  # epochs finished before this session (0 unless resumed)
        self.rows = [r for r in read_metrics(self.paths.metrics) if int(r["epoch"]) <= done]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._tval = time.perf_counter()

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
        if trainer.is_global_zero:
            self.rows.append(row)
            write_metrics(self.paths.metrics, self.rows)
            for lg in trainer.loggers:  # trainer.loggers: per-epoch rows as epoch/*
                lg.log_metrics({f"epoch/{k}": float(v) for k, v in row.items()}, step=row["epoch"])
            log.info(_summary(row))


def _summary(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}"]
    parts += [f"{k} {row[k]:.2f}" for k in ("f_top1", "jp_top1") if k in row]
    return " | ".join([*parts, f"{row['train_img_per_s']:.0f} img/s"])


class ImageProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counted in images: ``epoch 3/20`` with images done, img/s and the epoch's ETA, and in
    the postfix ``run_eta``, the time left in the run at the mean pace of this session's epochs.

    ``batch_size`` (per process) scales the batch counts: training batches are full (the loaders drop the last
    partial one). The validation bar counts batches.
    """

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.epoch_seconds: list[float] = []  # wall time of each epoch of this session (training + validation)
        self._epoch_t0: float | None = None  # start of the running epoch (None between epochs)

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.unit, bar.unit_scale = "img", self.batch_size
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_t0 = time.perf_counter()
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_t0 is not None:
            self.epoch_seconds.append(time.perf_counter() - self._epoch_t0)
        self._epoch_t0 = None
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        eta = self.run_eta(trainer)
        if eta is not None:
            items["run_eta"] = time.strftime("%H:%M:%S", time.gmtime(eta))
        return items

    def run_eta(self, trainer: L.Trainer) -> float | None:
        """Seconds left in the run (None before the session's first epoch has ended)."""
        if not self.epoch_seconds or trainer.max_epochs is None:
            return None
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        left = trainer.max_epochs - trainer.current_epoch  # epochs not finished, the current one included
        if self._epoch_t0 is None:  # between epochs: the current one has just ended
            return mean * max(left - 1, 0)
        return max(mean * left - (time.perf_counter() - self._epoch_t0), 0.0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically and read with ``weights_only=True`` (corrupt files raise ``SSALError``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location="cpu")


class BestCheckpoint(ModelCheckpoint):
    """``checkpoints/best.ckpt``: the epoch with the highest validation ``monitor`` (written before last.ckpt, so
    last.ckpt never runs ahead of it). The best score is restored by value, so it survives a moved run directory."""

    def __init__(self, paths: RunPaths, monitor: str) -> None:
        super().__init__(paths.checkpoints, "best", f"val/{monitor}", mode="max", save_on_train_epoch_end=True,
                         enable_version_counter=False)  # fmt: skip

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.val_result is not None and self.monitor in trainer.callback_metrics:  # validated, has +JP
            super().on_train_epoch_end(trainer, pl_module)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("best_model_score") is not None:
            self._set_best(state["best_model_score"])

    def _set_best(self, score: torch.Tensor) -> None:
        path = os.path.join(str(self.dirpath), "best.ckpt")
        self.best_k_models, self.best_model_path, self.best_model_score = {path: score}, path, score
        self.kth_best_model_path, self.kth_value = path, score


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` at the end of every epoch (what ``--resume`` continues from)."""

    def __init__(self, paths: RunPaths) -> None:
        super().__init__(paths.checkpoints, "last", save_on_train_epoch_end=True, enable_version_counter=False)
        self.epochs_saved = 0  # epochs this session saved in last.ckpt

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.epochs_saved = trainer.current_epoch + 1
        signals.check()  # a signal that came while the row and checkpoints were written stops here


def ema_callback(decay: float) -> L.Callback:
    """Lightning's weight averaging as an exponential moving average of every float parameter and buffer.

    Integer buffers (gamma, BN batch counters) are copied, not averaged. Validation and checkpoints use the average.
    """

    def ema(avg: torch.Tensor, cur: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return avg + (cur - avg) * (1.0 - decay) if avg.is_floating_point() else cur

    return WeightAveraging(avg_fn=ema, use_buffers=True)


def build_trainer(
    cfg: Config,
    paths: RunPaths,
    writer: RunWriter,
    has_val: bool,
    callbacks: list[L.Callback] | None = None,
    resume: bool = False,
) -> L.Trainer:
    """The Lightning Trainer of a run: devices, nodes, strategy, precision, loggers (``trainer.loggers``; with
    ``resume`` the MLflow / W&B runs continue), checkpoints, progress bar."""
    t = cfg.trainer
    loggers = build_loggers(cfg, paths, resume)
    sync = [LoggerSync(cfg, paths)] if loggers else []
    strategy = t.strategy
    many = t.num_nodes > 1 or t.devices == "auto" or int(t.devices) > 1
    if cfg.ssal.groupings in ONLINE_SOURCES and cfg.has_branches and many and strategy in ("auto", "ddp"):
        strategy = "ddp_find_unused_parameters_true"  # the branches take no part in steps before group_epoch
    # best before last: a crash between the two leaves last.ckpt at the previous epoch, so the resumed run redoes
    # this epoch and rewrites best.ckpt (the other order would lose a best epoch whose score is already recorded)
    checkpoints = [BestCheckpoint(paths, writer.monitor)] if has_val else []
    bar = t.progress_bar and sys.stderr.isatty()  # on a terminal; logs and CI get RunWriter's line per epoch
    progress = [ImageProgressBar(cfg.data.batch_size)] if bar else []
    try:
        return L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=strategy,
            precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]
            max_epochs=t.epochs,
            limit_train_batches=t.limit_train_batches,
            logger=loggers or False,
            callbacks=[*(callbacks or []), *progress, writer, *checkpoints, LastCheckpoint(paths), *sync],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=bar,
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
