"""Run directories and checkpoints.

Layout of a run directory (``ssal train`` writes it; every other command reads it)::

    RUN_DIR/
      config.yaml             resolved config (ssal train --config RUN_DIR/config.yaml reproduces the run)
      groupings/g1.json ...   the grouping of each branch (ssal.Grouping JSON)
      checkpoints/last.ckpt   end of the latest finished epoch (what --resume continues from)
      checkpoints/best.ckpt   best validation epoch (+JP top-1 with branches, else f top-1)
      metrics.csv             one row per epoch: losses, f / JP top-1/top-5, each g_i group accuracy, lr, times
      tb/                     TensorBoard event files
      eval.md, eval.json      written by ssal evaluate
      confusion.npy/.png      written by ssal confusion
      .ssal.lock              while a command writes into the run (``ssal.lock``: one writer at a time)

A checkpoint is a ``torch.save`` dict of tensors and plain Python values only (Lightning's training state plus
an ``"ssal"`` entry holding the config, groupings, class names, RNG states and the library version); it is
written atomically and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .architecture import SSALModel
from .config import Config, config_from_dict, read_yaml
from .errors import SSALError
from .files import atomic_write, atomic_write_text
from .grouping import Grouping

__all__ = [
    "RunInfo",
    "RunPaths",
    "check_finite",
    "check_resumable",
    "checkpoint_metadata",
    "identity_differences",
    "load_checkpoint",
    "load_run",
    "load_run_data",
    "read_metrics",
    "save_checkpoint",
    "write_metrics",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def groupings_dir(self) -> Path:
        return self.root / "groupings"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    def grouping(self, i: int) -> Path:
        """The JSON file of branch ``i`` (0-based)."""
        return self.groupings_dir / f"g{i + 1}.json"


# --- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (temporary file in the same folder, then rename)."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file raises ``SSALError``."""
    path = Path(path)
    if path.is_dir():
        raise SSALError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise SSALError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise SSALError(f"checkpoint {path} is an empty file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # torch's message goes on to explain how to load it unsafely
            raise SSALError(
                f"checkpoint {path} holds objects other than tensors and plain values; ssal only loads checkpoints "
                "with weights_only=True (is it an ssal checkpoint?)"
            ) from None
        raise SSALError(
            f"corrupt or unreadable checkpoint {path}: not a checkpoint file written by torch.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, io.UnsupportedOperation) as e:
        raise SSALError(f"corrupt or unreadable checkpoint {path}: {_first_line(e)}") from None
    except Exception as e:  # e.g. IndexError or KeyError from a truncated or garbled file
        raise SSALError(f"corrupt or unreadable checkpoint {path}: {type(e).__name__} {_first_line(e)}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SSALError(f"{path} is not an ssal checkpoint (no state_dict)")
    return ckpt


def checkpoint_metadata(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``"ssal"`` entry of a loaded checkpoint; ``SSALError`` naming the first field that is wrong.

    ``state_dict`` maps names to tensors; the entry holds ``config`` (a mapping), ``num_classes`` (int >= 2) and
    optionally ``groupings`` (a list of mappings), ``class_names`` (num_classes strings), ``mean``/``std`` (3 finite
    numbers, std > 0) and ``epochs_done`` (int >= 0).
    """
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise SSALError(f"{path}: state_dict must map parameter names to tensors")
    meta = ckpt.get("ssal")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise SSALError(f"{path} has no ssal metadata (config, groupings)")

    def bad(key: str, what: str) -> SSALError:
        return SSALError(f"{path}: ssal metadata {key} must be {what}, got {_short(meta.get(key))}")

    n = meta.get("num_classes")
    if not _is_int(n) or n < 2:
        raise bad("num_classes", "an integer >= 2")
    groupings = meta.get("groupings", [])
    if not isinstance(groupings, list) or not all(isinstance(g, dict) for g in groupings):
        raise bad("groupings", "a list of groupings")
    names = meta.get("class_names")
    if names is not None and not (
        isinstance(names, list) and len(names) == n and all(isinstance(c, str) for c in names)
    ):
        raise bad("class_names", f"null or a list of {n} strings")
    for key in ("mean", "std"):
        v = meta.get(key)
        ok = isinstance(v, list) and len(v) == 3 and all(_is_number(x) and math.isfinite(x) for x in v)
        if v is not None and not (ok and (key == "mean" or all(x > 0 for x in v))):
            raise bad(key, "null or 3 finite numbers" + (" > 0" if key == "std" else ""))
    if not isinstance(meta.get("groupings_pending", False), bool):
        raise bad("groupings_pending", "true or false")
    done = meta.get("epochs_done", 0)
    if not _is_int(done) or done < 0:
        raise bad("epochs_done", "an integer >= 0")
    return meta


#: What Lightning needs in a checkpoint to continue a run (the rest of the training state is optional).
TRAINING_STATE = ("pytorch-lightning_version", "epoch", "global_step", "loops", "optimizer_states", "lr_schedulers")


def check_resumable(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """``SSALError`` unless a loaded checkpoint holds the training state ``--resume`` continues from."""
    checkpoint_metadata(ckpt, path)
    missing = [k for k in TRAINING_STATE if k not in ckpt]
    if missing:
        raise SSALError(
            f"{path} holds no training state ({', '.join(missing)} missing; a weights-only or exported file?); "
            "it cannot be resumed: train into a new run_dir"
        )
    if not all(isinstance(ckpt[k], list) for k in ("optimizer_states", "lr_schedulers")) or not _is_int(ckpt["epoch"]):
        raise SSALError(f"{path}: its training state is damaged; it cannot be resumed: train into a new run_dir")


def _kind(t: torch.Tensor) -> str:
    """complex, float, bool or int: a checkpoint tensor must be of its parameter's kind (no silent casts)."""
    return (
        "complex"
        if t.is_complex()
        else "float"
        if t.is_floating_point()
        else "bool"
        if t.dtype == torch.bool
        else "int"
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v: Any) -> str:
    text = repr(v).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def state_dict_mismatch(e: BaseException) -> str:
    """The useful part of ``load_state_dict``'s error: the missing, unexpected and mis-shaped keys, shortened."""
    lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
    text = " ".join(lines) or _first_line(e)
    return text if len(text) <= 300 else text[:297] + "..."


def check_finite(state: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """``SSALError`` if any floating-point tensor of ``state`` holds NaN or Inf (a diverged or damaged model)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SSALError(f"{where} has NaN/Inf weights ({', '.join(bad[:3])}{more}); the model cannot be used")


# --- metrics.csv -------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike, epochs: bool = False) -> list[dict[str, str]]:
    """The rows of a metrics.csv (empty if it does not exist); with ``epochs``, every row must have a numeric epoch."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SSALError(f"{path} is damaged ({_first_line(e)[:100]}); restore or delete it") from None
    if epochs and not all(str(r.get("epoch")).isdigit() for r in rows):
        raise SSALError(f"{path} is damaged (an epoch that is not a number); restore or delete it")
    return rows


def write_metrics(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts, possibly with different keys) as one CSV, atomically; columns in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# --- loading a run ------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    """A trained run, ready for evaluation, prediction, explanation, attacks or export."""

    model: SSALModel
    config: Config
    groupings: list[Grouping]
    paths: RunPaths
    checkpoint: Path
    epoch: int
    class_names: list[str] | None
    num_classes: int
    eta: list[float] = field(default_factory=list)

    @property
    def gammas(self) -> list[torch.Tensor]:
        """gamma_i of each branch (LongTensors)."""
        return self.model.gammas


def _resolve_dir(run_dir: str | os.PathLike) -> RunPaths:
    root = Path(run_dir)
    if not root.is_dir():
        raise SSALError(f"run directory not found: {root}")
    paths = RunPaths(root)
    if not paths.checkpoints.is_dir():  # e.g. a pipeline's --out, which holds the runs baseline/, ssal/, ...
        runs = sorted(d.name for d in root.iterdir() if (d / "checkpoints").is_dir())
        if runs:
            raise SSALError(
                f"{root} is not a run directory but holds the runs {', '.join(runs[:6])}: give one of them "
                f"(e.g. {root / runs[-1]})"
            )
    return paths


def load_run(
    run_dir: str | os.PathLike,
    which: str = "best",
    map_location: Any = "cpu",
    data_root: str | os.PathLike | None = None,
) -> RunInfo:
    """Rebuild the model of a run from its checkpoint (``best``, ``last`` or a path) with its config and groupings.

    The model is in eval mode, on ``map_location``, with the trained weights and the run's groupings. ``data_root``
    replaces the config's ``data.root`` (the data set's location on this machine, e.g. for a released run).
    """
    from .build import DataBundle, build_model, eta_values

    paths = _resolve_dir(run_dir)
    ckpt_path = {"best": paths.best, "last": paths.last}.get(which, Path(which))
    if which == "best" and not ckpt_path.is_file():
        ckpt_path = paths.last
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    meta = checkpoint_metadata(ckpt, ckpt_path)
    try:
        cfg = config_from_dict(meta["config"])
    except SSALError as e:
        raise SSALError(f"{ckpt_path}: its config is not valid: {e}") from None
    if data_root is not None:
        cfg.data.root = str(data_root)
    if meta.get("groupings_pending"):
        raise SSALError(
            f"{ckpt_path} was saved before the run's online groupings existed (ssal.group_epoch="
            f"{cfg.ssal.group_epoch}); train past it, or pick a later checkpoint"
        )
    groupings = [Grouping.from_dict(d, where=f"{ckpt_path} grouping") for d in meta.get("groupings", [])]
    names = meta.get("class_names")
    num_classes = meta["num_classes"]
    if any(g.num_classes != num_classes for g in groupings):
        raise SSALError(f"{ckpt_path}: a grouping's class count differs from num_classes={num_classes}")
    stats = meta.get("mean"), meta.get("std")
    data = DataBundle(cfg.data.name, num_classes, names, mean=stats[0], std=stats[1])
    model = build_model(cfg, num_classes, groupings, data, load_weights=False)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    check_finite(state, ckpt_path)
    own = model.state_dict()
    kinds = [k for k, v in state.items() if k in own and _kind(v) != _kind(own[k])]
    if kinds:
        k = kinds[0]
        raise SSALError(f"{ckpt_path}: {k} holds {state[k].dtype} values where the model has {own[k].dtype}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise SSALError(f"{ckpt_path} does not match its config's model: {state_dict_mismatch(e)}") from None
    _warn_if_foreign(paths, ckpt_path, meta["config"])
    model.to(map_location).eval()
    etas = eta_values(cfg, len(groupings)) if groupings else []
    return RunInfo(model, cfg, groupings, paths, ckpt_path, meta.get("epochs_done", 0), names, num_classes, etas)


def load_run_data(info: RunInfo, splits: tuple[str, ...], cfg: Config | None = None) -> Any:
    """The ``splits`` of the run's data set (``cfg`` or the run's config), which must hold the classes the run was
    trained on: a class added, removed or renamed since would shift the labels."""
    from .build import load_data

    d = (cfg or info.config).data
    data = load_data(d, splits)
    names, own = list(data.class_names or []), list(info.class_names or [])
    if data.num_classes != info.num_classes or (names and own and names != own):
        new, gone = [c for c in names if c not in own][:3], [c for c in own if c not in names][:3]
        diff = [f"new: {', '.join(new)}"] * bool(new) + [f"missing: {', '.join(gone)}"] * bool(gone)
        diff = diff or [f"{data.num_classes} classes, not {info.num_classes}"]
        raise SSALError(
            f"the classes of the data at {d.root} are not those {info.checkpoint} was trained on "
            f"({'; '.join(diff)}); point data.root (--data-root) at the run's data"
        )
    return data


#: The config keys that tell runs apart; a checkpoint whose values differ from its run directory's config.yaml
#: comes from another run (epochs, the grouping source or run_dir may change legitimately, e.g. on resume).
IDENTITY_KEYS = (("name",), ("seed",), ("model",), ("data", "name"), ("ssal", "branches"))


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The ``IDENTITY_KEYS`` (dotted) whose values differ between two config dicts: runs of different setups."""

    def get(d: Any, keys: tuple[str, ...]) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    return [".".join(k) for k in IDENTITY_KEYS if get(a, k) != get(b, k)]


def _warn_if_foreign(paths: RunPaths, ckpt_path: Path, ckpt_config: dict[str, Any]) -> None:
    """Warn when the checkpoint used for a run directory (its own, e.g. copied in by hand, or a ``--checkpoint``
    path) was written by another run."""
    if not paths.config.is_file():
        return
    try:
        own = read_yaml(paths.config)
    except SSALError:
        return
    differ = identity_differences(own, ckpt_config)
    if differ:
        log.warning(
            "%s was written by another run (%s differ from %s): check that it belongs here",
            ckpt_path,
            ", ".join(differ),
            paths.config,
        )
