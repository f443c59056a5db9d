"""``ssal sweep``: hyper-parameter search over config keys with Optuna (optional extra ``ssal[sweep]``).

A search space is ``key=float:LOW:HIGH[:log]``, ``key=int:LOW:HIGH[:STEP]`` or ``key=choice:A,B,...`` (choices are
parsed as YAML). Every trial is a normal run directory ``OUT/trial_NNN`` trained by ``fit``; the objective is a
validation metric of its last epoch (never the test split). Lightning reports the metric to Optuna after every
validation, and Optuna's pruner stops bad trials (``optuna_integration.PyTorchLightningPruningCallback``). The
study lives in ``OUT/study.db`` (SQLite), so a sweep that was stopped goes on where it stopped: ``--trials`` counts
finished trials, and a trial whose process was killed is retried with the same parameters (Optuna's heartbeat).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import Config, resolve_raw, save_config
from .errors import SSALError
from .runs import read_metrics

__all__ = ["Space", "SweepResult", "parse_space", "run_sweep", "split_space_args"]

log = logging.getLogger(__name__)

KINDS = ("float", "int", "choice")
HEARTBEAT_SECONDS = 30  # default: a trial without a heartbeat for 2x this long was killed; it is retried


@dataclass(frozen=True)
class Space:
    """The search space of one config key."""

    key: str
    kind: str  # float | int | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int = 1
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Optuna's suggestion for this key."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def examples(self) -> list[Any]:
        """Values at the edges of the space (to check the config with them before any trial)."""
        if self.kind == "choice":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _number(text: str, what: str, integer: bool) -> float:
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        raise SSALError(f"{what}: {text!r} is not {'an integer' if integer else 'a number'}") from None
    if not math.isfinite(v):
        raise SSALError(f"{what}: {text!r} is not finite")
    return v


def parse_space(item: str) -> Space:
    """``"ssal.eta=float:0.05:1:log"`` -> ``Space``; ``SSALError`` naming the problem."""
    key, sep, spec = item.partition("=")
    key = key.strip()
    kind, _, rest = spec.partition(":")
    what = f"search space {item!r}"
    if not sep or not key or kind not in KINDS:
        raise SSALError(f"{what}: expected key=float:LOW:HIGH[:log], key=int:LOW:HIGH[:STEP] or key=choice:A,B,...")
    if kind == "choice":
        try:
            choices = tuple(yaml.safe_load(c) if c.strip() else None for c in rest.split(","))
        except yaml.YAMLError:
            raise SSALError(f"{what}: cannot parse a choice as YAML") from None
        if len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
            raise SSALError(f"{what}: give at least two different choices, separated by commas")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise SSALError(f"{what}: choices must be numbers, strings, true/false or null")
        return Space(key, "choice", choices=choices)
    parts = rest.split(":")
    if len(parts) not in (2, 3):
        raise SSALError(f"{what}: expected {kind}:LOW:HIGH[:{'log' if kind == 'float' else 'STEP or log'}]")
    integer = kind == "int"
    low, high = _number(parts[0], what, integer), _number(parts[1], what, integer)
    if not low < high:
        raise SSALError(f"{what}: LOW must be below HIGH, got {parts[0]} and {parts[1]}")
    log_scale, step = False, 1
    if len(parts) == 3:
        if parts[2] == "log":
            log_scale = True
        elif integer:
            step = int(_number(parts[2], what, True))
            if step < 1:
                raise SSALError(f"{what}: STEP must be >= 1")
        else:
            raise SSALError(f"{what}: the third field of a float range can only be 'log'")
    if log_scale and low <= 0:
        raise SSALError(f"{what}: a log range needs LOW > 0")
    return Space(key, kind, low, high, log_scale, step)


def split_space_args(items: list[str]) -> tuple[list[Space], list[str]]:
    """Split ``key=value`` words into search spaces (``float:``, ``int:``, ``choice:``) and fixed overrides."""
    spaces, fixed = [], []
    for item in items:
        value = item.partition("=")[2]
        (spaces if value.split(":", 1)[0] in KINDS and ":" in value else fixed).append(item)
    parsed = [parse_space(s) for s in spaces]
    keys = [s.key for s in parsed]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SSALError(f"search space: key {dup[0]} is given more than once")
    return parsed, fixed


@dataclass
class SweepResult:
    """What ``run_sweep`` wrote: the study, the best trial's config and the summary files."""

    study: Any
    out: Path
    best_config: Path | None
    files: list[Path]


def _import_optuna() -> tuple[Any, Any]:
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError:
        raise SSALError("ssal sweep needs Optuna: pip install 'ssal[sweep]'") from None
    return optuna, PyTorchLightningPruningCallback


def _trial_config(raw: dict, variant: str | None, fixed: dict, params: dict, out: Path, number: int) -> Config:
    name = f"{raw.get('name', 'run')}_trial{number:03d}"
    return resolve_raw(raw, variant, {**fixed, **params, "name": name, "run_dir": str(out / f"trial_{number:03d}")})


def check_objective(cfg: Config, metric: str) -> None:
    """``SSALError`` unless ``metric`` can be the objective: a validation metric on a held-out split."""

    if cfg.data.validates_on_test():
        raise SSALError(
            "the sweep's objective must not be measured on the test split: hold out a validation split "
            f"(data.val_fraction > 0, now {cfg.data.val_fraction})"
        )
    if metric.startswith("jp_") and not cfg.has_branches:
        raise SSALError(f"--metric {metric} needs SSAL branches (ssal.branches); a baseline has f_top1, val_loss")


def run_sweep(
    raw: dict,
    spaces: list[Space],
    fixed: dict[str, Any],
    *,
    trials: int,
    out: Path,
    study_name: str,
    metric: str = "f_top1",
    direction: str | None = None,
    pruner: str = "median",
    variant: str | None = None,
    seed: int = 0,
    heartbeat: int = HEARTBEAT_SECONDS,
) -> SweepResult:
    """Run (or continue) the study until it has ``trials`` finished trials; write the summary into ``out``."""
    from .engine import fit

    optuna, PruningCallback = _import_optuna()
    _quiet_optuna(optuna)
    direction = direction or ("minimize" if metric.endswith("loss") else "maximize")
    _check_sweep(raw, spaces, fixed, trials=trials, heartbeat=heartbeat, variant=variant, out=out, metric=metric)
    study = _open_study(optuna, out, study_name, direction=direction, pruner=pruner, seed=seed, heartbeat=heartbeat)
    study.set_user_attr("metric", metric)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done:
        log.info("study %s: %d of %d trials finished before; going on", study_name, done, trials)
    objective = _Objective(raw, variant, fixed, spaces, out, metric, fit=fit, optuna=optuna, pruning=PruningCallback)
    if done < trials:
        stop = optuna.study.MaxTrialsCallback(trials, states=finished)
        study.optimize(objective, callbacks=[stop], catch=(), gc_after_trial=True)
    return write_summary(study, out, raw, variant, fixed)


def _quiet_optuna(optuna: Any) -> None:
    """Keep Optuna's own log lines and warnings out of the output."""
    debug = logging.getLogger().level <= logging.DEBUG
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.ERROR)  # ssal logs each trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # an epoch without the metric (jp_* before online groups exist) is not reported; a wrong name fails the trial
    warnings.filterwarnings("ignore", message=".*is not in the evaluation logs for pruning.*")


def _check_sweep(
    raw: dict,
    spaces: list[Space],
    fixed: dict[str, Any],
    *,
    trials: int,
    heartbeat: int,
    variant: str | None,
    out: Path,
    metric: str,
) -> None:
    """``SSALError`` unless the sweep's options, every edge of its search space and its objective are valid."""
    if trials < 1:
        raise SSALError(f"--trials must be >= 1, got {trials}")
    if heartbeat < 1:
        raise SSALError(f"--heartbeat must be >= 1 second, got {heartbeat}")
    if not spaces:
        raise SSALError("give at least one search space, e.g. optim.lr=float:0.01:0.5:log")
    for sp in spaces:  # every key and value of the space must make a valid config before anything runs
        for v in sp.examples():
            cfg = _trial_config(raw, variant, fixed, {sp.key: v}, out, 0)
    check_objective(cfg, metric)


def _study_storage(optuna: Any, out: Path, heartbeat: int) -> Any:
    """The SQLite storage ``out/study.db``, whose trials without a heartbeat for ``2 * heartbeat`` s are retried."""
    return optuna.storages.RDBStorage(
        f"sqlite:///{(out / 'study.db').resolve()}",
        heartbeat_interval=heartbeat,
        grace_period=2 * heartbeat,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
    )


def _open_study(
    optuna: Any, out: Path, study_name: str, *, direction: str, pruner: str, seed: int, heartbeat: int
) -> Any:
    """The study ``study_name`` in ``out/study.db``, new or loaded; ``SSALError`` if it cannot be used as asked."""
    out.mkdir(parents=True, exist_ok=True)
    storage = _study_storage(optuna, out, heartbeat)
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    if pruner not in pruners:
        raise SSALError(f"--pruner must be one of {', '.join(pruners)}, got {pruner!r}")
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction=direction, load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruners[pruner](),
        )  # fmt: skip
    except ValueError as e:  # e.g. the stored study has another direction
        raise SSALError(f"study {study_name!r} in {out / 'study.db'}: {e}") from None
    if study.direction.name.lower() != direction:
        raise SSALError(f"study {study_name!r} in {out / 'study.db'} maximises/minimises the other way; use --out")
    return study


@dataclass(frozen=True)
class _Objective:
    """Optuna's objective: train one trial as a run directory and return the last value of its ``metric``."""

    raw: dict
    variant: str | None
    fixed: dict[str, Any]
    spaces: list[Space]
    out: Path
    metric: str
    fit: Callable[..., Any]
    optuna: Any
    pruning: Any  # optuna_integration.PyTorchLightningPruningCallback

    def __call__(self, trial: Any) -> float:
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        previous = self.optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        number = previous[0] if previous else trial.number  # a killed trial goes on in its own run directory
        params = {sp.key: sp.suggest(trial) for sp in self.spaces}
        cfg = _trial_config(self.raw, self.variant, self.fixed, params, self.out, number)
        trial.set_user_attr("run_dir", cfg.run_dir)
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))
        resume = bool(previous) and (Path(cfg.run_dir) / "checkpoints" / "last.ckpt").is_file()
        self.fit(cfg, resume=resume, callbacks=[self.pruning(trial, monitor=f"val/{self.metric}")])
        return _last_value(trial.number, Path(cfg.run_dir) / "metrics.csv", self.metric)


def _last_value(number: int, metrics: Path, metric: str) -> float:
    """The last value of ``metric`` in a trial's ``metrics.csv``; ``SSALError`` if it has none."""
    rows = [r for r in read_metrics(metrics) if r.get(metric) not in (None, "")]
    if not rows:
        raise SSALError(f"trial {number}: the run logged no {metric!r} (columns of metrics.csv)")
    return float(rows[-1][metric])


def _fmt(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def write_summary(study: Any, out: Path, raw: dict, variant: str | None, fixed: dict) -> SweepResult:
    """``trials.csv`` and ``trials.md`` (every trial), ``best.yaml`` (the best config, for ``ssal train``), and
    Optuna's ``history.png`` and ``importance.png``."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    metric = study.user_attrs.get("metric", "value")
    header = ["trial", "state", metric, *keys, "run_dir"]
    rows = [
        [t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.4g}",
         *[_fmt(t.params.get(k, "")) for k in keys], t.user_attrs.get("run_dir", "")]
        for t in trials
    ]  # fmt: skip
    files = [out / "trials.csv", out / "trials.md"]
    with open(files[0], "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    files[1].write_text("\n".join(md) + "\n", encoding="utf-8")
    best_path = None
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        name = f"{raw.get('name', 'run')}_best"
        cfg = resolve_raw(raw, variant, {**fixed, **best.params, "name": name})
        cfg.run_dir = str(Path("runs") / name)
        best_path = save_config(cfg, out / "best.yaml")
        files.append(best_path)
        log.info("best: trial %d, %s %.4g (%s)", best.number, metric, best.value, best.params)
    files += _plots(study, out, len(complete))
    return SweepResult(study, out, best_path, files)


def _plots(study: Any, out: Path, complete: int) -> list[Path]:
    """Optuna's optimisation history and (with 2+ finished trials and 2+ parameters or values) importances."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    made = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are marked experimental
        for name, plot, needed in (("history", ov.plot_optimization_history, 1),
                                   ("importance", ov.plot_param_importances, 2)):  # fmt: skip
            if complete < needed:
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances of a parameter that never varied
                log.warning("no %s plot: %s", name, e)
                continue
            path = out / f"{name}.png"
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(fig)
            made.append(path)
    return made
