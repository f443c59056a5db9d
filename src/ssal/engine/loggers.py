"""Experiment loggers (``trainer.loggers``): Lightning's CSV, TensorBoard, MLflow and W&B loggers.

metrics.csv in the run directory is written whatever is chosen (``RunWriter``; other commands read it). Each chosen
logger gets the resolved config as hyper-parameters, the per-step training loss and the per-epoch rows
(``epoch/*``), the validation metrics (``val/*``), and at the end of training the run directory as an artefact.
The ids of an MLflow / W&B run are kept in ``RUN_DIR/loggers.json``, so ``--resume`` continues the same run and
``ssal evaluate`` adds the final evaluation to it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from ..config import Config
from ..errors import SSALError
from ..files import atomic_write_json
from ..runs import RunPaths

__all__ = [
    "LOGGER_FILE",
    "LoggerSync",
    "build_loggers",
    "check_logger_packages",
    "flat_config",
    "log_evaluation",
    "mlflow_uri",
    "run_files",
]

log = logging.getLogger(__name__)

LOGGER_FILE = "loggers.json"  # in the run directory: the MLflow / W&B run ids
_PACKAGES = {"mlflow": ("mlflow", "ssal[mlflow]"), "wandb": ("wandb", "ssal[wandb]")}
_SKIP = {"wandb", "mlruns", "mlartifacts"}  # logger stores inside a run directory: not part of its artefact


def check_logger_packages(names: list[str], uri: str = "") -> None:
    """SSALError naming the extra to install for a chosen logger whose package is missing (for MLflow with a
    ``sqlite:`` store, also SQLAlchemy and Alembic, which ``mlflow-skinny`` does not bring)."""
    for name in names:
        if name in _PACKAGES:
            module, extra = _PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise SSALError(f"trainer.loggers: {name} needs the {module} package; pip install '{extra}'")
    sql = ("sqlalchemy", "alembic")
    if "mlflow" in names and uri.startswith("sqlite:") and any(importlib.util.find_spec(m) is None for m in sql):
        raise SSALError(
            f"trainer.loggers: the MLflow store {uri} needs sqlalchemy and alembic; pip install 'ssal[mlflow]' "
            "(or set trainer.mlflow_uri to a tracking server)"
        )


def mlflow_uri(cfg: Config, paths: RunPaths) -> str:
    """``trainer.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite store next to the run directory
    (``<parent>/mlflow.db``: the runs of one folder share it, as ``mlflow ui`` expects)."""
    uri = cfg.trainer.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri or f"sqlite:///{(paths.root.resolve().parent / 'mlflow.db').as_posix()}"


def _local_artifacts(uri: str) -> str | None:
    """The artefact folder of the default local store (next to its database), None for any other store."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def flat_config(cfg: Config) -> dict[str, Any]:
    """The resolved config as dotted keys (``optim.lr``); lists and mappings as their JSON text."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else value

    walk("", {k: v for k, v in cfg.to_dict().items() if k != "variant"})
    return out


def _saved(paths: RunPaths) -> dict[str, Any]:
    path = paths.root / LOGGER_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("%s is unreadable: new MLflow / W&B runs are started", path)
        return {}


def build_loggers(cfg: Config, paths: RunPaths, resume: bool = False) -> list[Logger]:
    """Lightning loggers of ``trainer.loggers``; with ``resume``, the MLflow / W&B runs of loggers.json continue."""
    check_logger_packages(cfg.trainer.loggers, mlflow_uri(cfg, paths) if "mlflow" in cfg.trainer.loggers else "")
    saved = _saved(paths) if resume else {}
    out: list[Logger] = []
    for name in cfg.trainer.loggers:
        if name == "tensorboard":
            out.append(TensorBoardLogger(save_dir=str(paths.root), name="tb", version="", default_hp_metric=False))
        elif name == "csv":
            out.append(CSVLogger(save_dir=str(paths.root), name="csv", version=""))
        elif name == "mlflow":
            uri = mlflow_uri(cfg, paths)
            old = saved.get("mlflow", {})
            run_id = old.get("run_id") if old.get("tracking_uri") == uri else None
            out.append(
                MLFlowLogger(
                    experiment_name=cfg.trainer.experiment,
                    run_name=cfg.name,
                    tracking_uri=uri,
                    run_id=run_id,
                    artifact_location=_local_artifacts(uri),
                )
            )
        elif name == "wandb":
            offline = not os.environ.get("WANDB_MODE")  # W&B offline unless the environment says otherwise
            old = saved.get("wandb", {})
            out.append(
                WandbLogger(
                    project=cfg.trainer.experiment,
                    name=cfg.name,
                    save_dir=str(paths.root),
                    id=old.get("id"),
                    offline=offline,
                    resume="allow",
                )
            )
    return out


def run_files(root: Path) -> Iterator[Path]:
    """The files of a run directory that make its artefact (not the logger stores kept inside it)."""
    for dirpath, dirs, files in os.walk(root):
        if Path(dirpath) == root:
            dirs[:] = [d for d in dirs if d not in _SKIP]
        dirs.sort()
        for f in sorted(files):
            yield Path(dirpath) / f


class LoggerSync(L.Callback):
    """Rank 0: the resolved config as hyper-parameters and loggers.json at the start, the run directory as an
    artefact of the MLflow / W&B run at the end of training; the W&B run is finished at teardown (so a process
    that trains several runs, e.g. ``ssal pipeline``, writes each one out)."""

    def __init__(self, cfg: Config, paths: RunPaths) -> None:
        self.cfg, self.paths = cfg, paths

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        params = flat_config(self.cfg)
        ids: dict[str, Any] = {}
        for lg in trainer.loggers:
            try:
                lg.log_hyperparams(params)
            except Exception as e:  # e.g. MLflow refuses to change a parameter of a resumed run
                log.warning("%s: hyper-parameters not logged (%s)", type(lg).__name__, str(e).splitlines()[0][:200])
            if isinstance(lg, MLFlowLogger):
                uri = mlflow_uri(self.cfg, self.paths)
                ids["mlflow"] = {"tracking_uri": uri, "run_id": lg.run_id, "experiment": self.cfg.trainer.experiment}
            elif isinstance(lg, WandbLogger):
                mode = _wandb_mode()
                ids["wandb"] = {"id": lg.experiment.id, "project": self.cfg.trainer.experiment, "mode": mode}
        if ids:
            atomic_write_json(self.paths.root / LOGGER_FILE, ids)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for lg in trainer.loggers:
            try:
                if isinstance(lg, MLFlowLogger):
                    for f in run_files(self.paths.root):
                        rel = f.parent.relative_to(self.paths.root).as_posix()
                        lg.experiment.log_artifact(lg.run_id, str(f), "run" if rel == "." else f"run/{rel}")
                elif isinstance(lg, WandbLogger):
                    import wandb

                    art = wandb.Artifact(_artifact_name(self.cfg.name), type="run-dir")
                    for f in run_files(self.paths.root):
                        art.add_file(str(f), name=f.relative_to(self.paths.root).as_posix())
                    lg.experiment.log_artifact(art)
            except Exception as e:  # an unreachable server must not fail a finished training run
                log.warning("%s: run directory not uploaded (%s)", type(lg).__name__, str(e).splitlines()[0][:200])

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for lg in trainer.loggers:  # Lightning leaves a W&B run open until the process exits: finish it now
            if isinstance(lg, WandbLogger) and getattr(lg, "_experiment", None) is not None:
                lg.experiment.finish()
                lg._experiment = None


def _wandb_mode() -> str:
    """offline or online, as the W&B logger runs: Lightning's offline logger sets ``WANDB_MODE=dryrun``."""
    mode = os.environ.get("WANDB_MODE") or "offline"
    return "offline" if mode in ("offline", "dryrun") else mode


def _artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + "-run"


def _numbers(prefix: str, value: Any) -> dict[str, float]:
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _numbers(f"{prefix}/{key}", sub).items()}
    return {}


def log_evaluation(run_dir: str | os.PathLike, report: dict[str, Any], prefix: str = "eval") -> list[str]:
    """Log the numbers of an evaluation report (``eval.json``'s content) to the MLflow / W&B run that trained
    ``run_dir`` (its loggers.json), as ``<prefix>/<name>``; returns the loggers written to. A logger that fails (an
    unreachable server) gets a warning: the report is on disk already."""
    paths = RunPaths(Path(run_dir))
    saved = _saved(paths)
    metrics = {k: v for key, val in report.items() for k, v in _numbers(f"{prefix}/{key}", val).items()}
    done = []
    for name, log_to in (("mlflow", _log_mlflow), ("wandb", _log_wandb)):
        if name in saved:
            check_logger_packages([name], saved[name].get("tracking_uri", ""))
            try:
                log_to(saved[name], metrics, paths)
            except Exception as e:  # an unreachable server must not fail a finished evaluation
                log.warning(
                    "%s: %s not logged (%s)", name, prefix, (str(e).splitlines() or [type(e).__name__])[0][:200]
                )
                continue
            done.append(name)
    return done


def _log_mlflow(ids: dict[str, Any], metrics: dict[str, float], paths: RunPaths) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    for k, v in metrics.items():
        client.log_metric(ids["run_id"], k, v)


def _log_wandb(ids: dict[str, Any], metrics: dict[str, float], paths: RunPaths) -> None:
    import wandb

    mode = "offline" if ids.get("mode") == "offline" else None  # else: wandb's own settings (online)
    run = wandb.init(id=ids["id"], project=ids.get("project"), dir=str(paths.root), mode=mode, resume="allow")
    run.summary.update(metrics)
    run.log(metrics)
    run.finish()
