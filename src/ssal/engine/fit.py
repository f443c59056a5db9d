"""``fit``: build a run's objects from its config, then train (or resume) it into its run directory."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from .. import __version__, signals
from ..build import DataBundle, branch_configs, build_run, load_data
from ..compute import ComputeMeter
from ..config import Config, ignored_settings, save_config
from ..data import dataset_spec
from ..errors import SSALError
from ..files import check_output_path
from ..hardware import num_threads
from ..lock import run_lock
from ..online import ONLINE_SOURCES, OnlineGrouping
from ..runs import RunPaths, check_resumable, load_checkpoint, read_metrics, state_dict_mismatch
from .loggers import check_logger_packages, mlflow_uri
from .task import SSALDataModule, SSALTask
from .trainer import LastCheckpoint, RunWriter, build_trainer, ema_callback, quiet_lightning

__all__ = ["FitResult", "check_checkpoint_fits", "check_config", "checkpoint_meta", "ensure_writable_run", "fit"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` produced: the run directory, the model's parameter count and the final metrics row."""

    run_dir: Path
    num_params: int
    last_row: dict[str, str] | None
    is_global_zero: bool = True


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


def check_checkpoint_fits(path: Path, task: L.LightningModule) -> None:
    """``SSALError`` unless the checkpoint at ``path`` holds exactly the task's weights (names and shapes)."""
    state = load_checkpoint(path)["state_dict"]
    own = task.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", shapes))
            if keys
        ]
        raise SSALError(f"{path} does not match the config's model ({'; '.join(parts)}); resume with the run's config")


def checkpoint_meta(cfg: Config, data: Any, groupings: list[Any]) -> dict[str, Any]:
    """What every checkpoint of the run records besides the training state."""
    return {
        "version": __version__,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "variant"},
        "groupings": [g.to_dict() for g in groupings],
        "class_names": list(data.class_names) if data.class_names else None,
        "num_classes": int(data.num_classes),
        "mean": list(data.mean) if data.mean else None,
        "std": list(data.std) if data.std else None,
    }


def check_config(cfg: Config) -> int:
    """Check everything a dry run checks (class count, groupings and their k, the model with its pretrained
    weights, loss, eta), quietly and without writing; returns the model's parameter count (0: not checked, for
    ImageFolder data that is not there, which training itself reports)."""
    d = cfg.data
    if not dataset_spec(d.name).in_memory and d.num_classes is None and not (Path(d.root) / "train").is_dir():
        return 0
    root = logging.getLogger("ssal")
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        return _fit_locked(cfg, RunPaths(Path(cfg.run_dir)), resume=False, dry_run=True).num_params
    finally:
        root.setLevel(level)


def fit(
    cfg: Config, *, resume: bool = False, dry_run: bool = False, callbacks: list[L.Callback] | None = None
) -> FitResult:
    """Train the run described by ``cfg`` into ``cfg.run_dir`` (or, with ``dry_run``, only build the model).

    ``callbacks`` are added to the Trainer's (e.g. ``ssal sweep``'s pruning callback).
    """
    with num_threads(cfg.trainer.threads):  # callers in the same process (tests, pipelines) keep their setting
        return _fit(cfg, resume, dry_run, callbacks or [])


def _fit(cfg: Config, resume: bool, dry_run: bool, extra: list[L.Callback]) -> FitResult:
    quiet_lightning()
    for line in ignored_settings(cfg):
        log.warning("%s: %s", cfg.name, line)
    paths = RunPaths(Path(cfg.run_dir))
    loggers = cfg.trainer.loggers
    check_logger_packages(loggers, mlflow_uri(cfg, paths) if "mlflow" in loggers else "")  # before any work
    if dry_run:
        return _fit_locked(cfg, paths, resume, dry_run)
    check_output_path(paths.root, "dir")
    with run_lock(paths.root, "train"):  # one writer per run directory, taken before the first file is written
        before = set(paths.root.rglob("*"))
        try:
            return _fit_locked(cfg, paths, resume, dry_run, extra)
        except SSALError:
            if not paths.last.is_file():  # refused before an epoch was saved: remove what this session wrote
                _remove_new(paths.root, before)
            raise


def _remove_new(root: Path, before: set[Path]) -> None:
    """Delete the files and folders under ``root`` that are not in ``before`` (a refused run leaves nothing)."""
    new = sorted((p for p in root.rglob("*") if p not in before), key=lambda p: len(p.parts), reverse=True)
    for p in new:
        try:
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            log.debug("could not remove %s", p)


def _fit_locked(
    cfg: Config, paths: RunPaths, resume: bool, dry_run: bool, extra: list[L.Callback] | None = None
) -> FitResult:
    ckpt = None if dry_run else ensure_writable_run(paths, resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = _load_checked_data(cfg, dry_run)
    online = cfg.ssal.groupings in ONLINE_SOURCES and cfg.has_branches
    saved = sorted(paths.groupings_dir.glob("g*.json"), key=lambda p: int(p.stem[1:]))
    if ckpt is not None and not online and saved:  # resume with the groupings the run started with
        cfg.ssal.groupings = [str(f) for f in saved]
    from_data = cfg.ssal.groupings in ("confusion", "superclasses")  # a dry run loads no data: placeholders
    parts = build_run(cfg, data, placeholder=dry_run and from_data)
    log.info("%s: %s with %d branch(es), %.2fM parameters", cfg.name, cfg.model.name, len(parts.groupings),
             parts.num_params / 1e6)  # fmt: skip
    if dry_run:
        return FitResult(paths.root, parts.num_params, None)
    model = parts.model.to(memory_format=torch.channels_last) if cfg.trainer.channels_last else parts.model
    t = cfg.trainer
    meta = checkpoint_meta(cfg, data, parts.groupings)
    task = SSALTask(model, parts.loss, parts.eta, optim=cfg.optim, schedule=cfg.schedule, epochs=t.epochs,
                    compile=t.compile, meta=meta, check_every=t.log_every_n_steps)  # fmt: skip
    if ckpt is not None:  # before any file is written: a config that builds another model is refused here
        check_checkpoint_fits(ckpt, task)
    meter = ComputeMeter()
    callbacks: list[L.Callback] = [meter, *([ema_callback(t.ema_decay)] if t.ema_decay > 0 else []), *(extra or [])]
    if online:
        grouper = OnlineGrouping.from_config(branch_configs(cfg, data.num_classes), cfg.ssal, paths, data.class_names)
        callbacks.insert(0, grouper)
        meter.extra = lambda: grouper.pass_flops
    files = [] if online else parts.groupings  # online groupings are written when they are made

    def write_run_files() -> None:
        save_config(cfg, paths.config)
        for i, g in enumerate(files):
            g.save(paths.grouping(i))

    writer = RunWriter(paths, "jp_top1" if parts.groupings else "f_top1", on_setup=write_run_files, compute=meter)
    trainer = build_trainer(
        cfg, paths, writer, has_val=data.val is not None, callbacks=callbacks, resume=ckpt is not None
    )
    _train(trainer, task, SSALDataModule(data, parts.loaders), ckpt, paths, t.epochs)
    rows = read_metrics(paths.metrics)
    return FitResult(paths.root, parts.num_params, rows[-1] if rows else None, trainer.is_global_zero)


def _load_checked_data(cfg: Config, dry_run: bool) -> DataBundle:
    """The run's train and val splits; for ImageFolder data a broken image is named now (or skipped), not found
    in the middle of an epoch."""
    data = load_data(cfg.data, ("train", "val"), dry_run=dry_run)
    if data.is_folder and not dry_run:
        from ..data.folder import check_images

        splits = [Path(cfg.data.root) / s for s in ("train", "val", "test") if (Path(cfg.data.root) / s).is_dir()]
        check_images(splits, skip=cfg.data.skip_broken)
    return data


def _train(
    trainer: L.Trainer, task: SSALTask, dm: SSALDataModule, ckpt: Path | None, paths: RunPaths, epochs: int
) -> None:
    """``trainer.fit`` with the run's errors made into one line, and a stop signal into ``signals.Interrupted``."""
    try:
        with signals.deferred():
            trainer.fit(task, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except (signals.Interrupted, SIGTERMException) as e:
        stop = e if isinstance(e, signals.Interrupted) else signals.Interrupted(signal.SIGTERM)
        done = max(next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint)).epochs_saved, task.start_epoch)
        stop.run_dir, stop.epochs_saved = paths.root, done
        stop.epoch = done + 1 if done < epochs else None
        raise stop from None
    except MisconfigurationException as e:  # e.g. a limit_train_batches that leaves no batch
        raise SSALError(f"trainer settings: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        if ckpt is not None and "parameter group" in str(e):  # an optimiser state of another code or config
            raise SSALError(f"{ckpt}: its optimiser state does not fit this run's optimiser ({e})") from None
        raise
    except RuntimeError as e:
        if ckpt is not None and "state_dict" in str(e):  # resuming with a config that builds another model
            raise SSALError(f"{ckpt} does not match the config's model: {state_dict_mismatch(e)}") from None
        raise
