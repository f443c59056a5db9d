"""The whole method in one call (paper Sec. 3): baseline -> confusion on the held-out split -> groupings ->
SSAL model(s) -> evaluation of both -> ``report.md`` with a table and a plot of validation accuracy per epoch.

Layout of a pipeline directory::

    OUT/baseline/            run directory of the baseline (no branches), with confusion.npy/.png
    OUT/<variant or ssal>/   run directory of each SSAL model (groupings from the baseline's confusion, or, with
                             ssal.groupings=online / weights / probe, made in the SSAL run itself: one pass)
    OUT/report.md            table of +TR / +JP / +LC, parameters, wall time; the plot below
    OUT/val_accuracy.png     validation top-1 per epoch: baseline f vs SSAL f and +JP
    OUT/metrics.csv          every run's metrics.csv, one row per (run, epoch)

Re-running the same command skips finished runs and resumes unfinished ones. The report counts the total
training compute of every arm: a two-stage SSAL model also pays for the baseline run and the confusion pass that
made its groups; a one-pass model pays only for itself (its own confusion pass included).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from .compute import forward_flops_per_sample
from .config import Config, load_config, resolve_raw, variant_names
from .engine.loggers import log_evaluation
from .errors import SSALError
from .evaluation import EvalReport, evaluate_run, format_report, run_confusion, save_confusion, save_report
from .files import atomic_write, atomic_write_text, check_output_path
from .lock import run_lock
from .online import ONLINE_SOURCES
from .runs import RunPaths, identity_differences, load_run, read_metrics, write_metrics

__all__ = ["PipelineRun", "run_pipeline", "train_or_resume"]

log = logging.getLogger(__name__)


@dataclass
class PipelineRun:
    """One trained and evaluated run of a pipeline."""

    label: str
    config: Config
    report: EvalReport
    total_flops: float | None = None  # training compute to produce this model, every stage included
    ks: tuple[int, ...] = ()  # each branch's number of groups, as the evaluated model holds them


def train_or_resume(cfg: Config) -> None:
    """Train ``cfg``; resume it if unfinished, skip it if all its epochs are done."""
    from .engine import fit

    paths = _check_same_setup(cfg)
    rows = read_metrics(paths.metrics)
    if paths.last.is_file() and rows and int(rows[-1]["epoch"]) >= cfg.trainer.epochs:
        log.info("%s: already trained (%s epochs), skipping", paths.root, rows[-1]["epoch"])
        return
    fit(cfg, resume=paths.last.is_file())


def _check_same_setup(cfg: Config) -> RunPaths:
    """``SSALError`` if ``cfg.run_dir`` holds a run of another setup (it would be skipped and reported as this one)."""
    paths = RunPaths(Path(cfg.run_dir))
    if paths.config.is_file():
        differ = identity_differences(load_config(paths.config).to_dict(), cfg.to_dict())  # defaults filled in
        if differ:
            raise SSALError(
                f"{paths.root} holds a run of another config ({', '.join(differ)} differ); "
                "give another --out, or remove it"
            )
    return paths


def _baseline_config(raw: dict[str, Any], overrides: dict[str, Any], base: Config, out: Path) -> Config:
    """The baseline run: ``base`` (the resolved config) without branches, for ``pipeline.baseline_epochs``."""
    epochs = base.pipeline.baseline_epochs or base.trainer.epochs
    extra = {"ssal.branches": [], "name": f"{base.name}_baseline", "run_dir": str(out / "baseline")}
    if epochs != base.trainer.epochs:
        extra["trainer.epochs"] = epochs
        if base.schedule.name == "triangular":  # keep the peak at the same fraction of training
            extra["schedule.peak_epoch"] = base.schedule.peak_epoch * epochs / base.trainer.epochs
    return resolve_raw(raw, None, {**overrides, **extra})


def _one_pass_groupings(raw: dict[str, Any], variant: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """``--one-pass``: the override that makes a variant's groups in its own run (``ssal.groupings=online`` unless a
    variant or ``key=value`` chose online, weights or probe); a variant or override choosing another source is an
    ``SSALError`` (its groups would not come from the run, or, for confusion, need the baseline one pass skips)."""
    chosen = {**(((raw.get("variants") or {}).get(variant) or {}) if variant else {}), **overrides}
    if "ssal.groupings" not in chosen:
        return {"ssal.groupings": "online"}
    given = chosen["ssal.groupings"]
    if given in ONLINE_SOURCES:
        return {}
    where = f"variant {variant} sets" if "ssal.groupings" not in overrides else "the override sets"
    need = " needs the baseline run that one pass skips" if given == "confusion" else " does not make them there"
    raise SSALError(
        f"--one-pass makes the groups in the SSAL run (ssal.groupings=online, weights or probe), but {where} "
        f"ssal.groupings={given}, which{need}; drop --one-pass or that setting"
    )


def _ssal_configs(
    raw: dict[str, Any], overrides: dict[str, Any], base: Config, out: Path, confusion: Path, one_pass: bool = False
) -> list[Config]:
    """One config per chosen variant (or the config itself) with branches, its groups from ``confusion``."""
    if base.ssal.confusion and Path(base.ssal.confusion) != confusion:
        log.warning("ssal.confusion=%s is replaced by the pipeline's baseline confusion matrix", base.ssal.confusion)
    names: list[str | None] = list(base.pipeline.variants or variant_names(raw)) or [None]
    cfgs = []
    for v in names:
        extra = {"ssal.confusion": str(confusion), "run_dir": str(out / (v or "ssal"))}
        if one_pass:
            extra.update(_one_pass_groupings(raw, v, overrides))
        cfg = resolve_raw(raw, v, {**overrides, **extra})
        if cfg.has_branches:
            cfgs.append(cfg)
        else:
            log.warning(
                "%s has no branches; the pipeline trains SSAL runs only, skipping it",
                f"variant {v}" if v else "the config",
            )
    return cfgs


def run_pipeline(
    raw: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    one_pass: bool = False,
) -> list[PipelineRun]:
    """Run the pipeline of a raw config (``read_yaml`` output) into ``out`` (default: the config's run_dir).

    ``one_pass`` (``--one-pass``): every SSAL run makes its groups itself (``ssal.groupings=online`` unless it chose
    weights or probe); another grouping source is an ``SSALError``. Every run's settings are checked (as a dry run
    does) before the first one trains, and ``out`` and each run directory stay locked (``ssal.lock``) meanwhile.
    """
    overrides = dict(overrides or {})
    if out is not None and overrides.get("run_dir") not in (None, "") and Path(overrides["run_dir"]) != Path(out):
        raise SSALError(f"--out {out} and run_dir={overrides['run_dir']} name two output folders; give one")
    base = resolve_raw(raw, None, overrides)  # the config without a variant, resolved once
    out = Path(out) if out is not None else Path(base.run_dir)
    bcfg = _baseline_config(raw, overrides, base, out)
    conf_path = Path(bcfg.run_dir) / "confusion.npy"
    cfgs = _ssal_configs(raw, overrides, base, out, conf_path, one_pass)
    if not cfgs:
        raise SSALError(
            "no SSAL run to train: ssal.branches is empty in the config and in every chosen variant (train a "
            "baseline alone with ssal train, or give branches, e.g. ssal.branches=[{at: g2, k: 4}])"
        )
    if bcfg.pipeline.baseline is False and any(c.ssal.groupings == "confusion" for c in cfgs):
        raise SSALError(
            "pipeline.baseline=false, but ssal.groupings=confusion makes the groups from the baseline's confusion "
            "matrix; drop pipeline.baseline, or make the groups in the SSAL run (--one-pass)"
        )
    for c in [bcfg, *cfgs]:
        check_output_path(c.run_dir, "dir")
    with contextlib.ExitStack() as locks:
        for d in [out, *(c.run_dir for c in [bcfg, *cfgs])]:
            locks.enter_context(run_lock(d, "pipeline"))
        from .engine import check_config

        for c in [bcfg, *cfgs]:  # every setting that can be checked is, before the first run's first step
            _check_same_setup(c)
            check_config(c)
        return _run_stages(bcfg, cfgs, out, conf_path)


def _run_stages(bcfg: Config, cfgs: list[Config], out: Path, conf_path: Path) -> list[PipelineRun]:
    one_pass = all(c.ssal.groupings in ONLINE_SOURCES for c in cfgs)
    two_stage = not one_pass and bcfg.pipeline.baseline is not False  # random, superclasses, files: none needed
    runs: list[PipelineRun] = []
    stage_one = None  # compute of the baseline run + its confusion pass, paid by every two-stage SSAL model
    if not two_stage and not bcfg.pipeline.baseline:
        log.info(
            "[1/4] one pass: the groups come from the SSAL run itself; no baseline (pipeline.baseline=true adds one)"
            if one_pass
            else "[1/4] no baseline (pipeline.baseline=false): the groups do not come from one"
        )
    else:
        log.info("[1/4] training the baseline into %s", bcfg.run_dir)
        train_or_resume(bcfg)
        binfo = load_run(bcfg.run_dir)
        brep = _evaluate(binfo)
        runs.append(PipelineRun("baseline", bcfg, brep, brep.train_flops))
    if two_stage:
        log.info("[2/4] confusion matrix of the baseline on the held-out split -> %s", conf_path)
        conf = run_confusion(binfo, "val")
        save_confusion(conf, conf_path, binfo.class_names)
        if brep.train_flops is not None:
            stage_one = brep.train_flops + forward_flops_per_sample(binfo.model) * float(conf.sum())
    for cfg in cfgs:
        log.info(
            "[3/4] training SSAL run %s (groupings: %s, criterion %s)",
            cfg.run_dir,
            cfg.ssal.groupings,
            cfg.ssal.criterion,
        )
        train_or_resume(cfg)
        info = load_run(cfg.run_dir)
        rep = _evaluate(info)
        one_pass = cfg.ssal.groupings in ONLINE_SOURCES
        total = rep.train_flops if one_pass or rep.train_flops is None else rep.train_flops + (stage_one or 0.0)
        runs.append(PipelineRun(Path(cfg.run_dir).name, cfg, rep, total, tuple(g.k for g in info.groupings)))
    if rank_zero_only.rank == 0:  # under DDP every process runs the pipeline; rank 0 writes the report
        log.info("[4/4] writing the report to %s", out / "report.md")
        write_report(runs, out)
    return runs


def _evaluate(info: Any) -> EvalReport:
    """Evaluate a run on test, write eval.json / eval.md, and log the numbers to its MLflow / W&B run, if any."""
    rep = evaluate_run(info)
    save_report(rep, info.paths.root)
    if rank_zero_only.rank == 0:  # under DDP every process evaluates; one logs
        for name in log_evaluation(info.paths.root, asdict(rep)):
            log.info("logged eval to the %s run of %s", name, info.paths.root)
    return rep


# --- report ----------------------------------------------------------------------------------------------------
def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _groups(r: PipelineRun) -> str:
    info = r.config
    if not r.report.group_acc:
        return "—"
    ks = "/".join(map(str, r.ks)) or "?"
    if info.ssal.groupings == "probe":
        return f"{ks} {info.ssal.criterion}, linear probe before training"
    if info.ssal.groupings in ONLINE_SOURCES:
        return f"{ks} {info.ssal.criterion}, {info.ssal.groupings} @ epoch {info.ssal.group_epoch:g}"
    return f"{ks} {info.ssal.criterion}" if info.ssal.groupings == "confusion" else f"{ks} {info.ssal.groupings}"


def _wall(r: PipelineRun) -> str:
    rows = read_metrics(Path(r.config.run_dir) / "metrics.csv")
    return f"{float(rows[-1]['wall_seconds']):.0f}" if rows else "—"


def _compute(r: PipelineRun, base: float | None) -> str:
    if not r.total_flops:
        return "— | —"
    rel = f"{r.total_flops / base:.2f}" if base else "—"
    return f"{r.total_flops:.3g} | {rel}"


def report_table(runs: list[PipelineRun]) -> str:
    """Markdown table: one row per run with test +TR/+JP/+LC, groups, parameters, total training compute, time."""
    head = (
        "| run | groups | +TR top-1 | +TR top-5 | +JP top-1 | +JP top-5 | +LC top-1 | parameters | "
        "total train FLOPs | x baseline | train s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = runs[0].total_flops if runs and runs[0].label == "baseline" else None
    for r in runs:
        p = r.report
        lines.append(
            f"| {r.label} | {_groups(r)} | {_f(p.tr_top1)} | {_f(p.tr_top5)} | {_f(p.jp_top1)} | {_f(p.jp_top5)} | "
            f"{_f(p.lc_top1)} | {p.params['total']:,} | {_compute(r, base)} | {_wall(r)} |"
        )
    return "\n".join(lines)


def plot_val_accuracy(runs: list[PipelineRun], path: Path) -> Path:
    """Validation top-1 per epoch: f of every run and +JP of the SSAL runs (paper Fig. 5 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        rows = [x for x in read_metrics(Path(r.config.run_dir) / "metrics.csv") if x.get("f_top1")]
        ep = [int(x["epoch"]) for x in rows]
        ax.plot(ep, [float(x["f_top1"]) for x in rows], marker="o", label=f"{r.label} f (+TR)")
        if rows and rows[0].get("jp_top1"):
            ax.plot(ep, [float(x["jp_top1"]) for x in rows], marker="s", ls="--", label=f"{r.label} +JP")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("validation accuracy per epoch: baseline vs SSAL")
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def _lc_split(cfg: Config) -> str:
    """Which split the runs validated on and +LC was fitted on, in words (the report's header)."""
    from .data import dataset_spec

    d = cfg.data
    if d.validates_on_test():
        return "+LC is not reported (no held-out validation split: the runs validated on the test split)"
    root = Path(d.root)
    if not dataset_spec(d.name).in_memory and (root / "val").is_dir() and (root / "test").is_dir():
        return "+LC is fitted on the validation split (val/)"
    return f"+LC is fitted on the held-out validation split ({d.val_fraction:g} of train)"


def write_report(runs: list[PipelineRun], out: Path) -> Path:
    """Write report.md, val_accuracy.png and the combined metrics.csv into ``out``."""
    plot_val_accuracy(runs, out / "val_accuracy.png")
    rows = []
    for r in runs:
        rows += [{"run": r.label, **x} for x in read_metrics(Path(r.config.run_dir) / "metrics.csv")]
    write_metrics(out / "metrics.csv", rows)
    base = runs[0].config
    epochs = f"{base.trainer.epochs} epochs{' (baseline)' if runs[0].label == 'baseline' else ''}"
    lines = [
        f"# SSAL pipeline: {base.name.removesuffix('_baseline')}",
        "",
        f"Data `{base.data.name}`, model `{base.model.name}`, {epochs}, test split; {_lc_split(base)}. "
        "Accuracies in %. Total training compute counts every stage a model needs (forward + backward FLOPs of "
        "the training steps; a two-stage SSAL model includes its baseline run and the confusion pass; a one-pass "
        "model its own confusion pass); x baseline divides by the baseline's compute.",
        "",
        report_table(runs),
        "",
        "![validation accuracy per epoch](val_accuracy.png)",
        "",
        "Per-run details (group accuracy of each branch, parameter split):",
        "",
    ]
    for r in runs:
        lines.append(format_report(r.report, title=r.label).replace("## ", "### ", 1))
    return atomic_write_text(out / "report.md", "\n".join(lines))
