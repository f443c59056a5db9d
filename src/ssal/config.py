"""Typed run configuration: YAML files, dotted ``key=value`` overrides, variants, validation.

A config file is a YAML mapping with the sections below (every key optional; the defaults are the dataclass
defaults). ``base: other.yaml`` merges the file on top of another (path relative to the including file).
``variants: {name: {dotted.key: value}}`` names alternative runs in one file (e.g. a sweep); ``--variant NAME``
picks one. Unknown keys and bad values raise ``SSALError`` naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import AUGMENTATIONS, DATASETS, data_home, default_root
from .data.mixing import AUTO_AUGMENTS
from .errors import SSALError
from .files import atomic_write_text
from .grouping import CRITERIA, shipped_groupings
from .hardware import PRECISIONS
from .prediction import validate_eta

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PipelineConfig",
    "SSALConfig",
    "ScheduleConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "expand_env",
    "ignored_settings",
    "parse_overrides",
    "read_yaml",
    "resolve_raw",
    "run_name",
    "save_config",
    "validate",
    "variant_names",
]

SCHEDULES = ("triangular", "warmup_linear", "warmup_cosine", "step", "constant")
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # trainer.loggers; metrics.csv is always written


@dataclass
class DataConfig:
    """What to train on. Batch sizes are per process (global batch = batch_size x devices x nodes)."""

    name: str = (
        "cifar100"  # cifar100 | cifar100_mini | digits | tinyimagenet | folder (ImageFolder: root/train, root/val)
    )
    root: str = ""  # data folder; ${VAR:-default} is expanded
    val_fraction: float = 0.1  # held-out part of train for validation, confusion and +LC (paper Sec. 4.1)
    split_seed: int = 0  # seed of the stratified train/val split
    per_class: int = 0  # train on a seeded stratified subset of N images per class (0: all); val is split off first
    augment: str = "cifar"  # small images: cifar (shift + flip) | shift | none; folder data: the ImageNet transforms
    max_shift: int = 5  # pixels of random translation with reflect padding (authors' CIFAR code: 5)
    mixup: float = 0.0  # mixup alpha (Beta(alpha, alpha)); 0: off. Training batches only, targets become soft
    cutmix: float = 0.0  # cutmix alpha; 0: off
    mix_prob: float = 1.0  # probability that a training batch is mixed (when mixup or cutmix is on)
    mix_switch_prob: float = 0.5  # with both on: probability of cutmix rather than mixup for a batch
    auto_augment: str = "none"  # none | randaugment | trivialaugment (torchvision transforms.v2, per image)
    random_erasing: float = 0.0  # probability of erasing a random box of each training image (0: off)
    normalize: bool = True  # per-channel mean/std normalisation inside the model
    batch_size: int = 64
    eval_batch_size: int = 256
    workers: int = 4  # DataLoader workers (folder data only)
    skip_broken: bool = False  # folder data: leave out unreadable images (one warning) instead of stopping
    num_classes: int | None = None  # only needed for a dry run of a folder data set that is not present
    download: bool = True  # cifar100(_mini), tinyimagenet: fetch the official archive into root if it is not there

    def validates_on_test(self) -> bool:
        """Whether training validates (and picks its best checkpoint) on the test split: in-memory data with
        ``val_fraction`` 0, or an ImageFolder tree without both val/ and test/ and without a held-out fraction."""
        spec = DATASETS.get(self.name)  # a known name: the config checks it
        if spec is not None and spec.in_memory:
            return self.val_fraction <= 0
        root = Path(self.root)
        return not ((root / "val").is_dir() and (root / "test").is_dir()) and self.val_fraction <= 0


@dataclass
class ModelConfig:
    """The backbone: a registered name (``ssal.models.list_models()``), ``torchvision:<name>`` or ``timm:<name>``."""

    name: str = "resnet18_cifar"
    options: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | str = False  # true: the library's weights (online); PATH: a local state_dict / ssal checkpoint
    input_size: int | None = None  # input side in pixels; default: the weights', the array data set's or the model's
    mean: list[float] | None = None  # input normalisation; default: the pretrained weights', else the data set's
    std: list[float] | None = None


@dataclass
class SSALConfig:
    """Branches, their groupings, the loss weights (paper Eq. 3) and eta of the joint prediction (Sec. 3.4)."""

    branches: str | list[dict[str, Any]] = field(default_factory=list)  # [] (baseline) | paper | [{at, k, head}]
    groupings: str | list[str] = "confusion"  # confusion | superclasses | random | online | weights | probe | files
    group_epoch: float = 1.0  # online / weights: epochs of main-only training before the groups are made
    regroup_every: float = 0.0  # online / weights: remake the groups every N epochs after group_epoch (0: never)
    confusion: str | None = None  # C x C .npy (ssal confusion RUN_DIR); ssal pipeline fills it in
    criterion: str = "join"  # join (similar classes together) | split (paper Sec. 3.1)
    refine: bool = False
    size_margin: float | None = None
    grouping_seed: int = 0
    eta: float | list[float] = 1.0
    main_weight: float = 1.0
    aux_weights: float | list[float] = 1.0


@dataclass
class OptimConfig:
    """SGD. Keras ``l2(wd)`` on every kernel equals ``weight_decay = 2 * wd`` here (d/dw wd*w^2 = 2*wd*w)."""

    lr: float = 0.1  # peak learning rate (per the global batch; not rescaled automatically)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False  # Keras l2 regularises kernels only; True decays BN/bias parameters too
    label_smoothing: float = 0.0
    group_smoothing: bool = False  # f's smoothing mass to the true class's group mates (first branch's grouping)
    backbone_lr_scale: float = 1.0  # lr multiplier of f's feature extractor (fine-tuning: e.g. 0.1)
    branch_lr_scale: float = 1.0  # lr multiplier of the branches g_i (f's classifier always gets lr)
    freeze_backbone_epochs: float = 0.0  # f's feature extractor is not updated for the first epochs (lr 0)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, updated every step (epochs may be fractional)."""

    name: str = "triangular"  # triangular | warmup_linear | warmup_cosine | step | constant
    peak_epoch: float = 8.0  # triangular: linear 0 -> lr up to here, then linear to final_lr at the end
    warmup_epochs: float = 0.0  # warmup_*, step: linear warm-up from 0
    milestones: list[float] = field(default_factory=list)  # step: epochs where lr *= gamma
    gamma: float = 0.1
    final_lr: float = 0.0  # fraction of lr reached at the last step (triangular, warmup_*)


@dataclass
class TrainerConfig:
    """Where and how to run (Lightning Trainer): one code path from 1 CPU to N GPUs on M nodes."""

    epochs: int = 20
    limit_train_batches: float = 1.0  # fraction of each epoch's batches to train on (step budgets, equal-time runs)
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: int | str = 1  # processes per node (int) or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto (ddp when more than one process) | ddp | ddp_spawn | ...
    precision: str | int = "auto"  # auto (bf16-mixed on GPUs and bf16 CPUs, else 32) | 32 | bf16-mixed | 16-mixed
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (first steps are slow)
    val_every: int = 1  # validate every n epochs (the last epoch is always validated)
    log_every_n_steps: int = 50
    progress_bar: bool = True
    deterministic: bool = False
    threads: int = 0  # torch.set_num_threads on CPU (0: leave torch's default)
    ema_decay: float = 0.0  # exponential moving average of the weights (e.g. 0.99; 0: off); checkpoints hold it
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])  # csv | tensorboard | mlflow | wandb
    mlflow_uri: str = ""  # MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/../mlflow.db
    experiment: str = "ssal"  # MLflow experiment / W&B project of the run


@dataclass
class PipelineConfig:
    """``ssal pipeline``: baseline -> confusion on the validation split -> groupings -> SSAL model."""

    baseline_epochs: int | None = None  # default: trainer.epochs
    variants: list[str] | None = None  # which variants become SSAL runs (default: all, or the base config)
    baseline: bool | None = None  # train the baseline (default: yes; in one pass, online groupings, no)


@dataclass
class Config:
    """A complete run configuration."""

    name: str = "run"
    run_dir: str = ""  # default: runs/<name>
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssal: SSALConfig = field(default_factory=SSALConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    variant: str | None = None  # the variant this config was resolved with (set by load_config)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    @property
    def has_branches(self) -> bool:
        """Whether this run trains SSAL branches."""
        return self.ssal.branches == "paper" or bool(self.ssal.branches)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# --- type checking of plain values ----------------------------------------------------------------
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(args[0])}"
    if typing.get_origin(tp) is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is made of YAML's plain types only (null, bool, int, float, str, lists, string-keyed maps),
    nested at most 20 deep (a YAML alias can make a list that contains itself)."""
    if isinstance(value, (list, dict)) and depth > 20:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` (int -> float only), or raise SSALError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not _plain(value):
        raise SSALError(f"config key {key}: expected {_type_name(tp)}, got a {type(value).__name__} (not plain YAML)")
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        for a in args:
            try:
                return _check(value, a, key)
            except SSALError:
                continue
        raise SSALError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise SSALError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SSALError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string
    ok = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if not ok:
        raise SSALError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _from_dict(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise SSALError(f"config key {prefix or '<top>'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise SSALError(f"unknown config key {where}{unknown[0]}; valid keys here: {', '.join(names)}")
    kwargs = {k: _check(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)


# --- value validation ------------------------------------------------------------------------------
def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise SSALError(f"config key {key}: {msg}")


def validate(cfg: Config) -> Config:
    """Check value ranges and choices that types alone cannot express, section by section."""
    t = cfg.trainer
    _need(t.epochs >= 1, "trainer.epochs", f"must be >= 1, got {t.epochs}")
    lim = t.limit_train_batches
    _need(0.0 < lim <= 1.0, "trainer.limit_train_batches", f"must be a fraction in (0, 1], got {lim}")
    _validate_data(cfg.data)
    _validate_ssal(cfg)
    _validate_optim(cfg)
    _validate_model(cfg)
    _validate_schedule(cfg.schedule, t.epochs)
    _validate_trainer(cfg)
    return cfg


def _validate_data(d: DataConfig) -> None:
    _need(d.name in DATASETS, "data.name", f"must be one of {', '.join(DATASETS)}, got {d.name!r}")
    _need(0.0 <= d.val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    _need(d.per_class >= 0, "data.per_class", f"must be >= 0 images per class (0: all), got {d.per_class}")
    _need(d.augment in AUGMENTATIONS, "data.augment", f"must be one of {', '.join(AUGMENTATIONS)}, got {d.augment!r}")
    _need(d.batch_size >= 1 and d.eval_batch_size >= 1, "data.batch_size", "batch sizes must be >= 1")
    _need(d.max_shift >= 0, "data.max_shift", f"must be >= 0, got {d.max_shift}")
    _need(d.workers >= 0, "data.workers", f"must be >= 0, got {d.workers}")
    for key, a in (("data.mixup", d.mixup), ("data.cutmix", d.cutmix)):
        _need(0.0 <= a < math.inf, key, f"is a Beta alpha: a finite number >= 0 (0: off), got {a}")
    for key, v in (("data.mix_prob", d.mix_prob), ("data.mix_switch_prob", d.mix_switch_prob)):
        _need(0.0 <= v <= 1.0, key, f"must be a probability in [0, 1], got {v}")
    _need(0.0 <= d.random_erasing <= 1.0, "data.random_erasing", f"must be in [0, 1], got {d.random_erasing}")
    aa = d.auto_augment
    _need(aa in AUTO_AUGMENTS, "data.auto_augment", f"must be one of {', '.join(AUTO_AUGMENTS)}, got {aa!r}")


def _validate_ssal(cfg: Config) -> None:
    s, t = cfg.ssal, cfg.trainer
    _need(isinstance(s.branches, list) or s.branches == "paper", "ssal.branches", "must be a list or 'paper'")
    choices = ("random", "superclasses", "confusion", "online", "weights", "probe", *shipped_groupings())
    _need(
        isinstance(s.groupings, list) or s.groupings in choices,
        "ssal.groupings",
        f"must be one of {', '.join(choices)} or a list of grouping files, got {s.groupings!r}",
    )
    if s.groupings in ("online", "weights"):
        e0 = s.group_epoch
        _need(0.0 <= e0 < t.epochs, "ssal.group_epoch", f"must be in [0, trainer.epochs), got {e0}")
        _need(s.regroup_every >= 0, "ssal.regroup_every", f"must be >= 0 (0: never), got {s.regroup_every}")
    sm = s.size_margin
    _need(sm is None or 1 <= sm < math.inf, "ssal.size_margin", f"must be null or a finite number >= 1, got {sm}")
    _need(s.criterion in CRITERIA, "ssal.criterion", f"must be join or split, got {s.criterion!r}")
    try:  # the count per branch is checked below, or for ``branches: paper`` when the model is built
        validate_eta(s.eta, len(s.eta) if isinstance(s.eta, list) else 1)
    except SSALError as e:
        raise SSALError(f"config key ssal.eta: {e}") from None
    weights = [s.main_weight, *([s.aux_weights] if isinstance(s.aux_weights, float) else s.aux_weights)]
    _need(all(w >= 0 and math.isfinite(w) for w in weights), "ssal.aux_weights", "loss weights must be finite, >= 0")
    n = len(s.branches) if isinstance(s.branches, list) else 0  # a baseline (0) ignores them; ``paper``: at build
    for key, v in (("ssal.eta", s.eta), ("ssal.aux_weights", s.aux_weights)):
        if n and isinstance(v, list):
            _need(len(v) == n, key, f"has {len(v)} values for {n} branch(es)")
    m = cfg.model
    probe = "probe needs model.pretrained (a probe on untrained features says little); from scratch use online"
    _need(s.groupings != "probe" or bool(m.pretrained), "ssal.groupings", probe)
    _need(s.groupings != "probe" or s.regroup_every == 0, "ssal.regroup_every", "the probe's groups are made once")


def _validate_optim(cfg: Config) -> None:
    o, t = cfg.optim, cfg.trainer
    _need(o.lr > 0 and math.isfinite(o.lr), "optim.lr", f"must be a finite number > 0, got {o.lr}")
    _need(0.0 <= o.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _need(0.0 <= o.label_smoothing < 1.0, "optim.label_smoothing", f"must be in [0, 1), got {o.label_smoothing}")
    _need(not o.nesterov or o.momentum > 0, "optim.nesterov", "needs momentum > 0")
    gs = "needs optim.label_smoothing > 0 and a branch (whose grouping names the group mates)"
    _need(not o.group_smoothing or (o.label_smoothing > 0 and cfg.has_branches), "optim.group_smoothing", gs)
    _need(o.backbone_lr_scale >= 0 and o.branch_lr_scale >= 0, "optim.backbone_lr_scale", "lr scales must be >= 0")
    fz = o.freeze_backbone_epochs
    _need(0.0 <= fz < t.epochs, "optim.freeze_backbone_epochs", f"must be in [0, epochs), got {fz}")


def _validate_model(cfg: Config) -> None:
    m = cfg.model
    size = m.input_size
    _need(size is None or 8 <= size <= 2048, "model.input_size", f"must be 8 to 2048 pixels, got {size}")
    _need((m.mean is None) == (m.std is None), "model.mean", "give model.mean and model.std together, or neither")
    _need(m.mean is None or len(m.mean) == len(m.std or []) == 3, "model.mean", "mean and std need 3 values each")
    _need(m.mean is None or all(math.isfinite(v) for v in m.mean), "model.mean", f"must be finite, got {m.mean}")
    _need(m.std is None or all(0 < v < math.inf for v in m.std), "model.std", f"must be finite, > 0, got {m.std}")
    _need(
        m.pretrained is not True or ":" in m.name,
        "model.pretrained",
        f"{m.name} has no downloadable weights; set model.pretrained=PATH (a state_dict or an ssal checkpoint)",
    )


def _validate_schedule(sc: ScheduleConfig, epochs: int) -> None:
    _need(sc.gamma > 0 and math.isfinite(sc.gamma), "schedule.gamma", f"must be a finite number > 0, got {sc.gamma}")
    ms = sc.milestones
    _need(all(math.isfinite(v) and v >= 0 for v in ms), "schedule.milestones", f"must be epochs >= 0, got {ms}")
    _need(sc.name in SCHEDULES, "schedule.name", f"must be one of {', '.join(SCHEDULES)}, got {sc.name!r}")
    _need(sc.name != "triangular" or 0 < sc.peak_epoch < epochs, "schedule.peak_epoch", "must be in (0, epochs)")
    _need(0.0 <= sc.warmup_epochs < epochs, "schedule.warmup_epochs", "must be in [0, epochs)")
    _need(0.0 <= sc.final_lr <= 1.0, "schedule.final_lr", "is a fraction of lr in [0, 1]")


def _validate_trainer(cfg: Config) -> None:
    t, d, s = cfg.trainer, cfg.data, cfg.ssal
    t.precision = str(t.precision)
    _need(t.precision in PRECISIONS, "trainer.precision", f"must be one of {', '.join(PRECISIONS)}")
    _need(0.0 <= t.ema_decay < 1.0, "trainer.ema_decay", f"must be in [0, 1) (0: off), got {t.ema_decay}")
    _need(t.num_nodes >= 1, "trainer.num_nodes", f"must be >= 1, got {t.num_nodes}")
    _need(t.val_every >= 1, "trainer.val_every", f"must be >= 1, got {t.val_every}")
    _need(t.log_every_n_steps >= 1, "trainer.log_every_n_steps", f"must be >= 1, got {t.log_every_n_steps}")
    _need(0 <= t.threads <= 4096, "trainer.threads", f"must be 0 (torch's default) to 4096, got {t.threads}")
    bad = [x for x in t.loggers if x not in LOGGERS]
    _need(not bad, "trainer.loggers", f"takes {', '.join(LOGGERS)}; got {bad[0] if bad else ''!r}")
    _need(len(set(t.loggers)) == len(t.loggers), "trainer.loggers", f"names a logger twice: {t.loggers}")
    _need(bool(t.experiment.strip()), "trainer.experiment", "must not be empty")
    for key, seed in (("seed", cfg.seed), ("data.split_seed", d.split_seed), ("ssal.grouping_seed", s.grouping_seed)):
        _need(0 <= seed < 2**32, key, f"must be in [0, 2**32), got {seed}")
    _need(t.devices == "auto" or (isinstance(t.devices, int) and t.devices >= 1), "trainer.devices", "int or auto")
    _need(cfg.pipeline.baseline_epochs is None or cfg.pipeline.baseline_epochs >= 1, "pipeline.baseline_epochs", ">=1")


def ignored_settings(cfg: Config) -> list[str]:
    """One line per key that is set but has no effect with the rest of the config (e.g. ``schedule.milestones``
    without ``schedule.name=step``); ``fit`` logs them as warnings."""
    sc, s, m, out = cfg.schedule, cfg.ssal, cfg.model, []
    if sc.milestones and sc.name != "step":
        out.append(f"schedule.milestones is used by schedule.name=step only; ignored with {sc.name}")
    late = [m for m in sc.milestones if m >= cfg.trainer.epochs]
    if late and sc.name == "step":
        out.append(f"schedule.milestones {late} lie at or after the end of training ({cfg.trainer.epochs} epochs)")
    if sc.gamma != ScheduleConfig.gamma and sc.name != "step":
        out.append(f"schedule.gamma is used by schedule.name=step only; ignored with {sc.name}")
    if sc.warmup_epochs > 0 and sc.name in ("triangular", "constant"):
        out.append(f"schedule.warmup_epochs is not used by schedule.name={sc.name} (warmup_*, step)")
    if sc.final_lr > 0 and sc.name in ("step", "constant"):
        out.append(f"schedule.final_lr is not used by schedule.name={sc.name} (triangular, warmup_*)")
    if cfg.has_branches and s.regroup_every > 0 and s.groupings not in ("online", "weights", "probe"):
        out.append(f"ssal.regroup_every is used by ssal.groupings=online / weights only; ignored with {s.groupings}")
    d = cfg.data
    if d.mix_prob != DataConfig.mix_prob and not (d.mixup > 0 or d.cutmix > 0):
        out.append("data.mix_prob is used with data.mixup or data.cutmix only; both are off")
    if d.mix_switch_prob != DataConfig.mix_switch_prob and not (d.mixup > 0 and d.cutmix > 0):
        out.append("data.mix_switch_prob chooses between data.mixup and data.cutmix; it needs both on")
    if cfg.trainer.mlflow_uri and "mlflow" not in cfg.trainer.loggers:
        out.append("trainer.mlflow_uri is used by trainer.loggers=[mlflow] only")
    if m.mean is not None and not cfg.data.normalize:
        out.append("model.mean / model.std are ignored: data.normalize is false (no normalisation inside the model)")
    return out


# --- overrides, files ------------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "ssal.branches=paper"]`` -> ``{"optim.lr": 0.1, ...}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SSALError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.05)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise SSALError(f"override {item!r}: cannot parse the value as YAML") from None
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copy); a number picks a list element (``ssal.branches.0.k``).

    Unknown keys are caught later by ``config_from_dict``.
    """
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node: Any = raw
        parts = dotted.split(".")
        for depth, p in enumerate(parts):
            where = ".".join(parts[:depth]) or "<top>"
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    n = len(node)
                    raise SSALError(f"override {dotted}: {where} has {n} element(s); {p!r} is not an index in [0, {n})")
                key: Any = int(p)
            elif isinstance(node, dict):
                if p.isdigit():
                    raise SSALError(f"override {dotted}: {where} is not a list (index {p})")
                key = p
            else:
                raise SSALError(f"override {dotted}: {where} is {node!r}, not a section or a list")
            if depth == len(parts) - 1:
                node[key] = value
            elif isinstance(node, dict) and key not in node:
                if parts[depth + 1].isdigit():
                    raise SSALError(f"override {dotted}: {'.'.join(parts[: depth + 1])} is not set, so not a list")
                node = node.setdefault(key, {})
            else:
                node = node[key]
    return raw


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def read_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file, following ``base:`` includes."""
    path = Path(path)
    if path.resolve() in _seen:
        raise SSALError(f"config {path}: circular base include")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SSALError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise SSALError(f"config {path} is a folder, not a file") from None
    except UnicodeDecodeError as e:
        raise SSALError(f"config {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise SSALError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SSALError(f"config {path}: expected a mapping at the top level")
    base = raw.pop("base", None)
    if base is not None:
        raw = _merge(read_yaml(path.parent / str(base), (*_seen, path.resolve())), raw)
    return raw


_ENV = re.compile(r"\$\{(\w+)(?::-([^{}]*))?\}")


def _env(name: str) -> str:
    """A variable's value; ``SSAL_DATA`` defaults to the data folder (``ssal.data.data_home``)."""
    return os.environ.get(name) or (str(data_home()) if name == "SSAL_DATA" else "")


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (the default may hold ``${VAR}`` itself); ``${SSAL_DATA}`` is the
    data folder: ``$SSAL_DATA``, else ``~/.cache/ssal/data``."""
    for _ in range(4):  # innermost first; a value is not expanded again and again
        out = _ENV.sub(lambda m: _env(m.group(1)) or (m.group(2) or ""), text)
        if out == text:
            break
        text = out
    return text


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a ``Config`` from a plain dict (no ``variants``)."""
    cfg = validate(_from_dict(Config, raw, ""))
    cfg.data.root = expand_env(cfg.data.root) or default_root(cfg.data.name)  # empty: the data set's default folder
    if not cfg.run_dir:
        cfg.run_dir = str(Path("runs") / cfg.name)
    return cfg


def variant_names(raw: dict[str, Any]) -> list[str]:
    """The variant names a raw config defines (empty if none)."""
    return list(_variants(raw))


def _variants(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    v = raw.get("variants") or {}
    if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
        raise SSALError("config key variants: expected a mapping of name -> {dotted.key: value}")
    return v


def run_name(raw: dict[str, Any], variant: str | None = None, overrides: dict[str, Any] | None = None) -> str:
    """The run's ``name`` as ``resolve_raw`` gives it (a variant's ``<base name>_<variant>`` by default), without
    checking the rest of the config."""
    if overrides and "name" in overrides:
        return str(overrides["name"])
    if variant is None:
        return str(raw.get("name", "run"))
    variants = _variants(raw)
    if variant not in variants:
        raise SSALError(f"unknown variant {variant!r}; this config has: {', '.join(variants) or 'none'}")
    return str(variants[variant].get("name", f"{raw.get('name', 'run')}_{variant}"))


def resolve_raw(raw: dict[str, Any], variant: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Apply a variant (if any), then dotted overrides, to a raw config dict and validate it.

    A variant's ``name`` defaults to ``<base name>_<variant>`` so that its run directory differs.
    """
    variants, name = _variants(raw), run_name(raw, variant)
    raw = {k: v for k, v in raw.items() if k != "variants"}
    if variant is not None:
        raw = apply_overrides(raw, {**variants[variant], "name": name})
    raw = apply_overrides(raw, overrides or {})
    cfg = config_from_dict(raw)
    cfg.variant = variant
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | None = None, variant: str | None = None) -> Config:
    """Read a YAML config, apply a variant and ``key=value`` overrides, validate, and return it."""
    return resolve_raw(read_yaml(path), variant, parse_overrides(overrides or []))


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically); ``load_config`` reads it back unchanged."""
    d = cfg.to_dict()
    d.pop("variant", None)
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))
