"""Evaluation of a trained run: +TR / +JP / +LC top-1/top-5 (paper Sec. 3.4), group accuracy per branch,
parameter counts, and the confusion matrix of the main classifier on a held-out split (input of Sec. 3.1).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_calibration_error, multiclass_confusion_matrix
from tqdm.auto import tqdm

from .architecture import SSALModel, SSALOutput
from .build import DataBundle, make_loader
from .config import Config
from .errors import SSALError
from .files import atomic_write, atomic_write_json, atomic_write_text
from .hardware import num_threads
from .prediction import (
    LinearCombination,
    SSALMetrics,
    class_log_probs,
    fit_linear_combination,
    fit_temperature,
    negative_log_likelihood,
)
from .runs import RunInfo, load_run_data, read_metrics
from .runtime import autocast, default_device, eval_mode

__all__ = [
    "TTA_MODES",
    "EvalReport",
    "calibration_error",
    "collect_outputs",
    "confusion_matrix",
    "evaluate_run",
    "format_report",
    "load_report",
    "load_temperatures",
    "mistakes_within",
    "param_counts",
    "run_confusion",
    "save_confusion",
    "save_report",
]

log = logging.getLogger(__name__)

#: Test-time augmentations of ``collect_outputs``: none, or the mean logits of the image and its mirror.
TTA_MODES = ("none", "flip")


def _bar_label(cfg: Config, label: str) -> str:
    """``collect_outputs``' progress label: none (no bar) when the run's config turned bars off."""
    return label if cfg.trainer.progress_bar else ""


@torch.no_grad()
def collect_outputs(
    model: SSALModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    precision: str = "32",
    progress: str = "",
    tta: str = "none",
) -> tuple[SSALOutput, torch.Tensor]:
    """Run ``model`` in eval mode over every batch; returns the concatenated float32 outputs (on CPU) and targets.

    ``tta="flip"`` averages the logits of each image and its horizontal mirror (test-time augmentation).
    """
    if tta not in TTA_MODES:
        raise SSALError(f"test-time augmentation must be none or flip, got {tta!r}")
    p = next(model.parameters())
    mains, auxs, ys = [], [], []
    total = getattr(batches, "num_samples", None) or len(getattr(batches, "sampler", None) or ()) or None
    bar = tqdm(total=total, desc=progress or "evaluating", unit="img", leave=False,
               disable=not progress or not sys.stderr.isatty())  # fmt: skip
    with eval_mode(model):  # the caller's train/eval modes come back afterwards
        for x, y in batches:
            bar.update(len(y))
            x = x.to(p.device, non_blocking=True)
            with autocast(p.device, precision):
                out = model(x)
                if tta == "flip":
                    o2 = model(x.flip(-1))
                    out = SSALOutput((out.main.float() + o2.main.float()) / 2, tuple(
                        (a.float() + b.float()) / 2 for a, b in zip(out.aux, o2.aux, strict=True)
                    ))  # fmt: skip
            mains.append(out.main.float().cpu())
            auxs.append([a.float().cpu() for a in out.aux])
            ys.append(y.cpu())
    bar.close()
    if not ys:
        raise SSALError(f"no images to evaluate ({progress or 'empty split'}): the split is empty")
    aux = tuple(torch.cat([a[i] for a in auxs]) for i in range(len(model.branches)))
    return SSALOutput(torch.cat(mains), aux), torch.cat(ys)


def param_counts(model: SSALModel) -> dict[str, int]:
    """Parameters of the whole SSAL model, of the backbone f alone, and of the branches."""
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return {"total": total, "backbone": backbone, "branches": total - backbone}


@dataclass
class EvalReport:
    """Test-set accuracies (percent) of a run and its parameter counts."""

    run_dir: str
    checkpoint: str
    epoch: int
    split: str
    num_samples: int
    tr_top1: float
    tr_top5: float
    jp_top1: float | None = None
    jp_top5: float | None = None
    lc_top1: float | None = None
    lc_top5: float | None = None
    group_acc: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    eta: list[float] = field(default_factory=list)
    lc_fitted_on: str | None = None
    ece_tr: float | None = None  # expected calibration error (%, 15 bins) of f's softmax
    ece_jp: float | None = None  # ... of the normalised joint probability
    nll_tr: float | None = None  # mean negative log-likelihood (nats) of f's softmax
    nll_jp: float | None = None  # ... of +JP
    temperature: dict[str, float] = field(default_factory=dict)  # +TS: T per prediction (tr, jp), fitted on val
    temperature_fitted_on: str | None = None  # the split the temperatures were fitted on (None: no held-out split)
    ece_tr_ts: float | None = None  # ECE of f after temperature scaling
    ece_jp_ts: float | None = None  # ... of +JP after temperature scaling
    nll_tr_ts: float | None = None
    nll_jp_ts: float | None = None
    mistakes_within: dict[str, float] = field(default_factory=dict)  # % of errors inside the true class's group
    mistakes_reference: str | None = None  # the coarse grouping that defines "inside": superclasses or g1
    tta: str = "none"
    train_flops: float | None = None  # training compute of the evaluated checkpoint (metrics.csv)
    selected_on_test: bool = False  # the checkpoint is best.ckpt of a run that validated on this test split


def calibration_error(probs: torch.Tensor, target: torch.Tensor) -> float:
    """Expected calibration error in percent (15 equal-width bins, top-1 confidence; torchmetrics)."""
    ece = multiclass_calibration_error(probs.float(), target, num_classes=probs.shape[1], n_bins=15, norm="l1")
    return 100.0 * float(ece)


def mistakes_within(pred: torch.Tensor, target: torch.Tensor, coarse: torch.Tensor) -> float | None:
    """Share (%) of the wrong predictions whose class lies in the true class's coarse group ("better mistakes")."""
    wrong = pred != target
    if not bool(wrong.any()):
        return None
    return 100.0 * float((coarse[pred[wrong]] == coarse[target[wrong]]).double().mean())


def _coarse_reference(info: RunInfo, data: DataBundle) -> tuple[str | None, torch.Tensor | None]:
    if data.fine_to_coarse is not None:
        return "superclasses", torch.as_tensor(data.fine_to_coarse, dtype=torch.long)
    if info.groupings:
        return info.model.branch_names[0], info.gammas[0].cpu()
    return None, None


def _train_flops(info: RunInfo) -> float | None:
    rows = [r for r in read_metrics(info.paths.metrics) if r.get("epoch") == str(info.epoch)]
    v = rows[-1].get("train_flops") if rows else None
    return float(v) if v else None


#: Fewer validation images per class than this make +LC's fit (C + sum k_i inputs per class) unreliable: a warning.
LC_MIN_PER_CLASS = 10


def _fit_lc(info: RunInfo, out: SSALOutput, y: torch.Tensor) -> LinearCombination:
    counts = [g.k for g in info.groupings]
    return fit_linear_combination(LinearCombination.features(out), y, info.num_classes, counts)


def evaluate_run(
    info: RunInfo,
    data: DataBundle | None = None,
    split: str = "test",
    device: torch.device | None = None,
    tta: str = "none",
) -> EvalReport:
    """Evaluate a run on ``split``: +TR, +JP, +LC (fitted on the held-out validation split, model frozen), group
    accuracy, calibration (ECE) and how the model errs (errors inside the true class's superclass or group)."""
    with num_threads(info.config.trainer.threads):
        return _evaluate_run(info, data, split, device, tta)


def _evaluate_run(
    info: RunInfo, data: DataBundle | None, split: str, device: torch.device | None, tta: str
) -> EvalReport:
    cfg = info.config
    device = device or default_device()
    info.model.to(device)
    data = data or load_run_data(info, ("train", "val", "test"))
    val_out, val_y = _held_out_outputs(info, data, split, device, tta)
    lc = _checked_lc(info, val_out, val_y) if info.groupings and val_out is not None else None
    out, y = collect_outputs(
        info.model,
        make_loader(cfg, data, getattr(data, split), train=False, device=device),
        cfg.trainer.precision,
        _bar_label(cfg, f"{split} set"),
        tta,
    )
    m = SSALMetrics([g.to("cpu") for g in info.gammas], info.eta or 1.0, lc)
    m.update(out, y)
    r = m.compute()
    logps = _log_probs(info, out)
    held = val_out is not None and val_y is not None
    temps = {k: fit_temperature(v, val_y) for k, v in _log_probs(info, val_out).items()} if held else {}
    ref, coarse = _coarse_reference(info, data)
    on_test = split == "test" and _is_best(info) and cfg.data.validates_on_test()
    if on_test:
        log.warning(
            "%s was chosen by accuracy on the test split (the run had no held-out validation split): its test "
            "accuracy is optimistic; report --checkpoint last",
            Path(info.checkpoint).name,
        )
    within = {}
    if coarse is not None:
        within = {k: v for k, lp in logps.items() if (v := mistakes_within(lp.argmax(1), y, coarse)) is not None}
    return EvalReport(
        run_dir=str(info.paths.root),
        checkpoint=str(info.checkpoint),
        epoch=info.epoch,
        split=split,
        num_samples=m.num_samples,
        tr_top1=r["f_top1"],
        tr_top5=r["f_top5"],
        jp_top1=r.get("jp_top1"),
        jp_top5=r.get("jp_top5"),
        lc_top1=r.get("lc_top1"),
        lc_top5=r.get("lc_top5"),
        group_acc={n: r[f"g{i + 1}_acc"] for i, n in enumerate(info.model.branch_names) if f"g{i + 1}_acc" in r},
        params=param_counts(info.model),
        eta=list(info.eta),
        lc_fitted_on="val" if lc is not None else None,
        **_calibration(logps, y, temps),
        mistakes_within=within,
        mistakes_reference=ref,
        tta=tta,
        train_flops=_train_flops(info),
        selected_on_test=on_test,
    )


def _held_out_outputs(
    info: RunInfo, data: DataBundle, split: str, device: torch.device, tta: str
) -> tuple[SSALOutput | None, torch.Tensor | None]:
    """The frozen model's outputs on the validation split, for +LC and +TS; (None, None) when there is none
    besides the split being evaluated (a warning says what is then not reported)."""
    if split != "val" and data.val is not None and data.val is not data.test:
        what = "validation outputs for +LC and +TS" if info.groupings else "validation outputs for +TS"
        loader = make_loader(info.config, data, data.val, train=False, device=device)
        return collect_outputs(info.model, loader, info.config.trainer.precision, _bar_label(info.config, what), tta)
    if split == "val":
        log.warning(
            "+LC and +TS are fitted on the validation split, so they are not reported on it (in-sample scores)"
            if info.groupings
            else "+TS is fitted on the validation split, so it is not reported on it (an in-sample score)"
        )
    else:
        log.warning(
            "no held-out split besides the test split (data.val_fraction=0, or folder data without test/): "
            "no temperature scaling (+TS)%s",
            " and no +LC" if info.groupings else "",
        )
    return None, None


def _checked_lc(info: RunInfo, val_out: SSALOutput, val_y: torch.Tensor) -> LinearCombination:
    """+LC fitted on the validation outputs, with a warning when that split is too small for it."""
    if len(val_y) < LC_MIN_PER_CLASS * info.num_classes:
        log.warning(
            "+LC is fitted on %d validation images for %d classes (fewer than %d per class): its accuracy is "
            "unreliable; hold out more (data.val_fraction)",
            len(val_y),
            info.num_classes,
            LC_MIN_PER_CLASS,
        )
    return _fit_lc(info, val_out, val_y)


def _calibration(logps: dict[str, torch.Tensor], y: torch.Tensor, temps: dict[str, float]) -> dict[str, Any]:
    """ECE and NLL of each prediction (tr, jp), raw and temperature-scaled (+TS), and the temperatures."""
    out: dict[str, Any] = {"temperature": temps, "temperature_fitted_on": "val" if temps else None}
    for k, lp in logps.items():
        out[f"ece_{k}"] = calibration_error(lp.exp(), y)
        out[f"nll_{k}"] = negative_log_likelihood(lp, y)
        if k in temps:
            scaled = (lp / temps[k]).log_softmax(1)
            out[f"ece_{k}_ts"] = calibration_error(scaled.exp(), y)
            out[f"nll_{k}_ts"] = negative_log_likelihood(scaled, y)
    return out


def _log_probs(info: RunInfo, out: SSALOutput) -> dict[str, torch.Tensor]:
    """log-probabilities of f (+TR) and, with branches, of the joint prediction (+JP)."""
    modes = ("tr", "jp") if info.groupings else ("tr",)
    return {m: class_log_probs(out, [g.cpu() for g in info.gammas], info.eta, m) for m in modes}


def _is_best(info: RunInfo) -> bool:
    try:
        return Path(info.checkpoint).resolve() == info.paths.best.resolve()
    except OSError:
        return False


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def format_report(rep: EvalReport, title: str | None = None) -> str:
    """The report as a Markdown table (what ``ssal evaluate`` prints and writes to eval.md)."""
    lines = [f"## {title or Path(rep.run_dir).name}", ""]
    lines += [f"Checkpoint `{rep.checkpoint}` (epoch {rep.epoch}), {rep.split} split, {rep.num_samples} images."]
    if rep.selected_on_test:
        lines += ["", "**This checkpoint was chosen by accuracy on this test split** (the run had no held-out "
                  "validation split), so the numbers below are optimistic; `--checkpoint last` is not."]  # fmt: skip
    lines += ["", "| prediction | top-1 (%) | top-5 (%) |", "|---|---|---|"]
    lines.append(f"| +TR (main classifier f) | {_pct(rep.tr_top1)} | {_pct(rep.tr_top5)} |")
    if rep.jp_top1 is not None:
        eta = ", ".join(f"{e:g}" for e in rep.eta)
        lines.append(f"| +JP (joint probability, eta {eta}) | {_pct(rep.jp_top1)} | {_pct(rep.jp_top5)} |")
        lines.append(
            f"| +LC (linear combination, fit on {rep.lc_fitted_on or '—'}) | "
            f"{_pct(rep.lc_top1)} | {_pct(rep.lc_top5)} |"
        )
    if rep.group_acc:
        lines += ["", "| branch | group accuracy (%) |", "|---|---|"]
        lines += [f"| {n} | {v:.2f} |" for n, v in rep.group_acc.items()]
    if rep.ece_tr is not None:
        lines += ["", "| prediction | ECE (%, 15 bins) | NLL | errors inside the true class's "
                  f"{rep.mistakes_reference or 'group'} (%) |", "|---|---|---|---|"]  # fmt: skip
        rows = (("tr", "+TR", rep.ece_tr, rep.nll_tr), ("jp", "+JP", rep.ece_jp, rep.nll_jp))
        for key, label, ece, nll in rows:
            if ece is not None:
                lines.append(f"| {label} | {ece:.2f} | {_num(nll)} | {_pct(rep.mistakes_within.get(key))} |")
        scaled = (("tr", "+TR", rep.ece_tr_ts, rep.nll_tr_ts), ("jp", "+JP", rep.ece_jp_ts, rep.nll_jp_ts))
        for key, label, ece, nll in scaled:
            if ece is not None:
                t = rep.temperature[key]
                lines.append(f"| {label} +TS (T = {t:.3f}) | {ece:.2f} | {_num(nll)} | (top-1 unchanged) |")
        if not rep.temperature:
            lines += ["", "No temperature scaling (+TS): the run has no held-out validation split to fit it on."]
    if rep.tta != "none":
        lines += ["", f"Test-time augmentation: {rep.tta} (logits of the image and its mirror averaged)."]
    if rep.train_flops:
        lines += ["", f"Training compute: {rep.train_flops / 1e15:.3g} PFLOP (forward + backward, metrics.csv)."]
    p = rep.params
    lines += ["", f"Parameters: {p['total']:,} total ({p['backbone']:,} backbone f + {p['branches']:,} branches)."]
    return "\n".join(lines) + "\n"


def save_report(rep: EvalReport, out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / f"{stem}.md", format_report(rep))
    js = atomic_write_json(out_dir / f"{stem}.json", asdict(rep))
    return md, js


def load_report(path: str | Path) -> EvalReport:
    """Read an eval.json back."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    known = set(EvalReport.__dataclass_fields__)
    return EvalReport(**{k: v for k, v in d.items() if k in known})


def load_temperatures(run_dir: str | Path) -> dict[str, float]:
    """The +TS temperatures (``tr``, ``jp``) that ``ssal evaluate`` fitted on the run's validation split."""
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        raise SSALError(f"{path} not found: run `ssal evaluate {run_dir}` first (it fits the temperatures)")
    temps = load_report(path).temperature
    if not temps:
        raise SSALError(f"{path} has no temperatures: the run has no held-out validation split to fit them on")
    return {k: float(v) for k, v in temps.items()}


# --- confusion ---------------------------------------------------------------------------------------------
def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """C x C counts: row = true class, column = predicted class (torchmetrics)."""
    return multiclass_confusion_matrix(pred.long(), target.long(), num_classes, validate_args=False).cpu().numpy()


def run_confusion(info: RunInfo, split: str = "val", device: torch.device | None = None) -> np.ndarray:
    """The confusion matrix of the main classifier f on a split (default: the held-out validation split)."""
    cfg = info.config
    device = device or default_device()
    info.model.to(device)
    data = load_run_data(info, (split,) if split != "val" else ("train", "val"))
    arrays = getattr(data, split)
    if arrays is None:
        raise SSALError(f"the run's data config has no {split!r} split (data.val_fraction={cfg.data.val_fraction})")
    with num_threads(cfg.trainer.threads):
        out, y = collect_outputs(
            info.model,
            make_loader(cfg, data, arrays, train=False, device=device),
            cfg.trainer.precision,
            _bar_label(cfg, f"{split} set"),
        )
    return confusion_matrix(out.main.argmax(1), y, info.num_classes)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
        np.save(f, arr, allow_pickle=False)


def save_confusion(conf: np.ndarray, out_npy: str | Path, class_names: list[str] | None = None) -> list[Path]:
    """Save the matrix as .npy (no pickle), a heatmap .png next to it, and the class names as .txt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_npy = Path(out_npy)
    paths = [atomic_write(out_npy, lambda p: _save_npy(p, conf))]
    fig, ax = plt.subplots(figsize=(8, 7))
    rates = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion of f ({conf.shape[0]} classes, {int(conf.sum())} images), row-normalised")
    fig.colorbar(im, ax=ax, fraction=0.046)
    png = out_npy.with_suffix(".png")
    paths.append(atomic_write(png, lambda p: fig.savefig(p, dpi=100, bbox_inches="tight", format="png")))
    plt.close(fig)
    if class_names:
        paths.append(atomic_write_text(out_npy.with_name(out_npy.stem + "_classes.txt"), "\n".join(class_names) + "\n"))
    return paths
