"""From a ``Config`` to the objects of a run: data splits, groupings, the SSAL model, the loss and loaders.

Every command (train, evaluate, confusion, pipeline) builds through these functions, so a run directory can be
rebuilt exactly from its saved config and groupings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .architecture import SSALModel
from .config import Config, DataConfig
from .data import (
    DATASETS,
    DeviceLoader,
    build_folder_loader,
    dataset_spec,
    load_arrays,
    per_class_subset,
    split_train_val,
)
from .data.folder import FolderSplit, class_folders, empty_class_folders
from .data.mixing import MixSettings
from .errors import SSALError
from .grouping import (
    Grouping,
    group_from_confusion,
    group_from_superclasses,
    load_confusion,
    load_shipped,
    random_grouping,
    shipped_groupings,
    validate_k,
)
from .loss import SSALLoss
from .models import check_branch, create_model, paper_branches
from .models.zoo import is_zoo_name, pretrained_info, zoo_weights_info
from .prediction import validate_eta

__all__ = [
    "DataBundle",
    "Loaders",
    "RunParts",
    "augmentation",
    "branch_configs",
    "build_loss",
    "build_model",
    "build_run",
    "check_input_size",
    "eta_values",
    "input_geometry",
    "load_data",
    "make_loader",
    "resolve_groupings",
]

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """The splits of one data set. ``train``/``val``/``test`` are ``ImageArrays`` or folder split names."""

    name: str
    num_classes: int
    class_names: list[str] | None = None
    fine_to_coarse: list[int] | None = None
    train: Any = None
    val: Any = None
    test: Any = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def is_folder(self) -> bool:
        """True for ImageFolder data (DataLoader path), False for in-memory arrays (DeviceLoader path)."""
        spec = DATASETS.get(self.name)  # a bundle of arrays made in code (benchmarks, tests) has no spec
        return spec is not None and not spec.in_memory


def _stats(cfg: DataConfig) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    spec = dataset_spec(cfg.name)
    return (spec.mean, spec.std) if cfg.normalize else (None, None)


def load_data(cfg: DataConfig, splits: Sequence[str] = ("train", "val"), dry_run: bool = False) -> DataBundle:
    """Load the requested splits (train, val carved from train, test); a dry run only resolves class counts."""
    spec = dataset_spec(cfg.name)
    if dry_run:
        n = cfg.num_classes or spec.num_classes
        if n is None and not spec.in_memory and (Path(cfg.root) / "train").is_dir():  # the data is here: count
            n = len(_train_classes(Path(cfg.root))) if class_folders(Path(cfg.root) / "train") else None
        if n is None:
            where = "" if spec.in_memory else f" (no class folders in {Path(cfg.root) / 'train'})"
            raise SSALError(f"data.num_classes is needed for a dry run of data set {cfg.name!r}{where}")
        return DataBundle(cfg.name, n, mean=spec.mean, std=spec.std)
    if not spec.in_memory:
        return _folder_bundle(cfg)
    bundle = DataBundle(cfg.name, 0)
    if {"train", "val"} & set(splits):
        full = load_arrays(cfg.name, cfg.root, "train", download=cfg.download)
        if cfg.val_fraction > 0:
            bundle.train, bundle.val = split_train_val(full, cfg.val_fraction, cfg.split_seed)
        else:
            bundle.train = full
        bundle.train = per_class_subset(bundle.train, cfg.per_class, cfg.split_seed)
    if "test" in splits or ("val" in splits and bundle.val is None):
        bundle.test = load_arrays(cfg.name, cfg.root, "test", download=cfg.download)
        if bundle.val is None and "val" in splits:
            log.warning("data.val_fraction is 0: validating on the test split")
            bundle.val = bundle.test
    ref = next(a for a in (bundle.train, bundle.val, bundle.test) if a is not None)
    bundle.num_classes, bundle.class_names = ref.num_classes, ref.class_names
    bundle.fine_to_coarse = ref.fine_to_coarse
    bundle.mean, bundle.std = _stats(cfg)
    return bundle


def _train_classes(root: Path) -> list[str]:
    """The class names of an ImageFolder tree: its train/ folder's class folders, at least 2, none of them empty."""
    if not (root / "train").is_dir():
        raise SSALError(f"ImageFolder data needs {root}/train/<class>/*.jpg (and {root}/val/<class>/...)")
    names = class_folders(root / "train")
    if len(names) < 2:
        raise SSALError(f"{root}/train has {len(names)} class folders; need at least 2")
    empty = empty_class_folders(root / "train")
    if empty:
        raise SSALError(f"{root}/train has class folder(s) without images: {', '.join(empty[:5])}; remove them")
    return names


def _folder_bundle(cfg: DataConfig) -> DataBundle:
    """Splits of an ImageFolder tree. Class indices come from the class folder *names* of train/: val/ and test/ may
    lack a class (its index stays that of train/), but a class folder that train/ does not have is an error."""
    root = Path(cfg.root)
    names = _train_classes(root)
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    if not (has_val or has_test):
        raise SSALError(f"ImageFolder data needs {root}/val/<class>/... (the test split) next to {root}/train")
    for split in ("val", "test"):
        extra = [c for c in class_folders(root / split) if c not in names] if (root / split).is_dir() else []
        if extra:
            raise SSALError(
                f"{root}/{split} has class folder(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} "
                f"that {root}/train does not have; every split must use the classes of train/"
            )
    train: Any = FolderSplit("train", per_class=cfg.per_class)
    val: Any = FolderSplit("val") if has_val else None
    test: Any = FolderSplit("test") if has_test else val  # ImageNet: the official val set is the test set
    if not (has_val and has_test) and cfg.val_fraction > 0:  # validate on a held-out part of train/ (paper Sec. 4.1)
        val = FolderSplit("train", "holdout", cfg.val_fraction, cfg.split_seed)
        train = FolderSplit("train", "rest", cfg.val_fraction, cfg.split_seed, cfg.per_class)
    elif val is not None and val is test:
        log.warning("data.val_fraction is 0: validating on the test split (%s)", test)
    mean, std = _stats(cfg)
    return DataBundle("folder", len(names), names, None, train, val, test, mean, std)


def branch_configs(cfg: Config, num_classes: int | None = None) -> list[dict[str, Any]]:
    """The branch dicts ({at, k, head, name}) of the config; ``paper`` is looked up in the model registry.

    With ``num_classes``, the paper's group counts are scaled to that class count (``paper_branches``).
    """
    if cfg.ssal.branches == "paper":
        return paper_branches(cfg.model.name, num_classes)
    return [check_branch(i, b, need_k=True) for i, b in enumerate(cfg.ssal.branches)]


def _load_confusion(path: str) -> Any:
    try:
        return load_confusion(path, npy_only=True)
    except SSALError as e:
        raise SSALError(f"{e} (make one with `ssal confusion RUN_DIR`)") from None


def resolve_groupings(cfg: Config, data: DataBundle, placeholder: bool = False) -> list[Grouping]:
    """One ``Grouping`` per branch, from ``ssal.groupings`` (random, superclasses, confusion or JSON files)."""
    branches = branch_configs(cfg, data.num_classes)
    s, C, names = cfg.ssal, data.num_classes, data.class_names
    if not branches:
        return []
    made = not isinstance(s.groupings, list) and s.groupings in ("random", "confusion", "online", "weights", "probe")
    for i, b in enumerate(branches):  # every source, before any training: online groups are made epochs later
        k = b["k"]
        try:
            if made:  # ssal makes these groups: the paper's range
                validate_k(k, C)
            elif isinstance(k, bool) or not isinstance(k, int) or not 2 <= k < C:  # files, superclasses: not trivial
                raise SSALError(f"k={k!r} is out of range: need an integer 2 <= k < C = {C} (1 group or C say nothing)")
        except (SSALError, TypeError, ValueError) as e:
            msg = str(e) if isinstance(e, SSALError) else f"k must be an integer, got {k!r}"
            raise SSALError(f"ssal.branches[{i}].k: {msg}") from None
    if isinstance(s.groupings, list):
        if len(s.groupings) != len(branches):
            raise SSALError(f"ssal.groupings lists {len(s.groupings)} files for {len(branches)} branches")
        out = [load_shipped(p) if p in shipped_groupings() else Grouping.load(p) for p in s.groupings]
    elif s.groupings in shipped_groupings():  # groups shipped with the package, e.g. cifar100-join-20
        out = [load_shipped(str(s.groupings)) for _ in branches]
    elif s.groupings == "random" or placeholder:
        out = [random_grouping(C, int(b["k"]), s.grouping_seed + i, names) for i, b in enumerate(branches)]
    elif s.groupings in ("online", "weights", "probe"):  # placeholders with the right k; made in training (ssal.online)
        out = [
            Grouping(tuple(c % int(b["k"]) for c in range(C)), int(b["k"]), source="online:pending", class_names=names)
            for b in branches
        ]
    elif s.groupings == "superclasses":
        if data.fine_to_coarse is None:
            raise SSALError(f"data set {data.name!r} has no superclasses; use ssal.groupings=random or confusion")
        out = [group_from_superclasses(data.fine_to_coarse, names) for _ in branches]
    else:
        if not s.confusion:
            raise SSALError(
                "ssal.groupings=confusion needs ssal.confusion=PATH (a C x C .npy from `ssal confusion RUN_DIR`); "
                "or set ssal.groupings to random, superclasses or a list of grouping JSON files"
            )
        conf = _load_confusion(str(s.confusion))
        src = f"confusion:{Path(str(s.confusion)).name}"
        out = [
            group_from_confusion(conf, int(b["k"]), s.criterion, s.grouping_seed, s.refine, s.size_margin, names, src)
            for b in branches
        ]
    for i, g in enumerate(out):
        if g.num_classes != C:
            raise SSALError(f"grouping {i + 1} has {g.num_classes} classes but data set {data.name!r} has {C}")
        aligned = g.aligned_to(names, f"grouping {i + 1}")  # the same classes in another order are remapped
        if aligned is not g:
            log.info("grouping %d lists the classes in another order than data set %r: remapped", i + 1, data.name)
        out[i] = g = aligned
        if g.k != int(branches[i]["k"]):  # the saved config must describe the model that is built
            src = s.groupings[i] if isinstance(s.groupings, list) else s.groupings
            raise SSALError(
                f"grouping {i + 1} ({src}) has k={g.k} groups but ssal.branches[{i}] says k={branches[i]['k']}; "
                "make them agree"
            )
    return out


def input_geometry(cfg: Config) -> tuple[tuple[int, int, int] | None, int | None]:
    """(C, H, W) the config's model takes and the resize side of the folder evaluation transform.

    ``model.input_size`` wins; then the image size of an in-memory data set (torchvision/timm models only); then
    the weights' metadata (torchvision/timm: crop size and crop fraction). ``(None, None)`` for a registered model
    without ``model.input_size``: its registered size, and the folder transforms' defaults (224, resize 256).
    """
    m = cfg.model
    zoo = is_zoo_name(m.name)
    crop = zoo_weights_info(m.name, m.options).crop_pct if zoo else None
    crop = crop or 224 / 256
    if m.input_size is not None:
        side = int(m.input_size)
    elif zoo and dataset_spec(cfg.data.name).image_size:
        side = dataset_spec(cfg.data.name).image_size
    elif zoo:
        side = (zoo_weights_info(m.name, m.options).input_size or (3, 224, 224))[1]
    else:
        return None, None
    return (3, side, side), int(round(side / crop))


def check_input_size(cfg: Config) -> None:
    """``SSALError`` if ``model.input_size`` differs from the side of an in-memory data set's images: those are fed
    at their own size (only ImageFolder data is cropped to ``model.input_size``)."""
    side, spec = cfg.model.input_size, dataset_spec(cfg.data.name)
    if side is not None and spec.in_memory and spec.image_size is not None and side != spec.image_size:
        raise SSALError(
            f"model.input_size={side}, but data set {cfg.data.name!r} has {spec.image_size}-pixel images, which "
            f"are not resized: drop model.input_size or set it to {spec.image_size}"
        )


def build_model(
    cfg: Config,
    num_classes: int,
    groupings: Sequence[Grouping],
    data: DataBundle | None = None,
    load_weights: bool = True,
) -> SSALModel:
    """The ``SSALModel`` of the config (no branches for a baseline), with input normalisation inside.

    With ``load_weights`` (training), ``model.pretrained`` weights are loaded and the normalisation is
    ``model.mean/std``, else the pretrained weights', else the data set's; it is written back into ``data`` so
    that checkpoints record it. ``load_weights=False`` (rebuilding a trained run) loads nothing and normalises
    with ``data``'s mean/std (the run's).
    """
    m = cfg.model
    if load_weights:
        check_input_size(cfg)
    mean, std = (data.mean, data.std) if data is not None and cfg.data.normalize else (None, None)
    if load_weights and cfg.data.normalize:
        if m.mean is not None and m.std is not None:
            mean, std = tuple(m.mean), tuple(m.std)
        elif m.pretrained:
            info = pretrained_info(m.name, m.pretrained, m.options)
            if info.mean is not None and info.std is not None:
                mean, std = info.mean, info.std
        if data is not None and mean is not None:
            data.mean, data.std = tuple(mean), tuple(std)  # type: ignore[arg-type]
    size, _ = input_geometry(cfg)
    model = create_model(
        m.name,
        num_classes,
        ssal=branch_configs(cfg, num_classes),
        groupings=list(groupings) or None,
        mean=mean,
        std=std,
        pretrained=m.pretrained,
        input_size=size,
        load_weights=load_weights,
        **m.options,
    )
    return model


def build_loss(cfg: Config, model: SSALModel) -> SSALLoss:
    """The SSAL loss (paper Eq. 3) with the config's weights and (group-aware) label smoothing."""
    s = cfg.ssal
    aux = s.aux_weights if model.branches else 1.0  # a baseline of an SSAL config: its branch weights do not apply
    return SSALLoss(model.gammas, s.main_weight, aux, cfg.optim.label_smoothing, cfg.optim.group_smoothing)


def eta_values(cfg: Config, num_branches: int) -> list[float]:
    """eta per branch for the joint prediction (paper Sec. 3.4)."""
    return validate_eta(cfg.ssal.eta, num_branches) if num_branches else []


def make_loader(
    cfg: Config,
    data: DataBundle,
    split: Any,
    *,
    train: bool,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Any:
    """A batch iterable yielding (x in [0, 1], y): ``DeviceLoader`` for arrays, ``build_folder_loader`` otherwise."""
    d = cfg.data
    bs = d.batch_size if train else d.eval_batch_size
    if data.is_folder:
        size, resize = input_geometry(cfg)
        sizes = {} if size is None else {"image_size": size[1], "resize": resize}
        out = build_folder_loader(
            d.root,
            split,
            bs,
            train=train,
            workers=d.workers,
            distributed=world_size > 1,
            rank=rank,
            world_size=world_size,
            seed=cfg.seed,
            **sizes,
            class_names=data.class_names,
            skip_broken=d.skip_broken,
            **(augmentation(d) if train else {}),
        )
        return out[0] if isinstance(out, tuple) else out
    return DeviceLoader(
        split,
        bs,
        train=train,
        augment=d.augment if train else "none",
        max_shift=d.max_shift,
        device=device,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        channels_last=cfg.trainer.channels_last,
        **(augmentation(d) if train else {}),
    )


def augmentation(d: DataConfig) -> dict[str, Any]:
    """The training loaders' options of mixup / cutmix, auto_augment and random erasing (both data paths)."""
    mix = MixSettings(d.mixup, d.cutmix, d.mix_prob, d.mix_switch_prob)
    return {"mix": mix, "auto_augment": d.auto_augment, "random_erasing": d.random_erasing}


@dataclass
class Loaders:
    """A run's loader factory: the engine calls it once it knows each rank's device and shard."""

    cfg: Config
    data: DataBundle

    @property
    def batch_size(self) -> int:
        """The training batch size (``data.batch_size``)."""
        return self.cfg.data.batch_size

    def __call__(
        self, split: str, *, train: bool, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1
    ) -> Any:
        """The loader of ``split`` (``train`` | ``val`` | ``test``) for one rank."""
        arrays = getattr(self.data, split)
        return make_loader(self.cfg, self.data, arrays, train=train, device=device, rank=rank, world_size=world_size)


@dataclass
class RunParts:
    """Everything a run trains with, built once from its config: data, groupings, model, loss, eta, loaders."""

    data: DataBundle
    groupings: list[Grouping]
    model: SSALModel
    loss: SSALLoss
    eta: list[float]
    loaders: Loaders

    @property
    def num_params(self) -> int:
        """Parameters of the model, branches included."""
        return sum(p.numel() for p in self.model.parameters())


def build_run(cfg: Config, data: DataBundle, placeholder: bool = False) -> RunParts:
    """Build a run's parts from ``cfg`` on ``data`` (``placeholder``: groupings of the right shape, for a dry run)."""
    groupings = resolve_groupings(cfg, data, placeholder=placeholder)
    model = build_model(cfg, data.num_classes, groupings, data)
    loss, eta = build_loss(cfg, model), eta_values(cfg, len(groupings))  # one weight and eta per branch
    return RunParts(data, groupings, model, loss, eta, Loaders(cfg, data))
