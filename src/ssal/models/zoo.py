"""torchvision and timm classifiers by name (``torchvision:<name>``, ``timm:<name>``), optionally pretrained.

``create_zoo_backbone`` builds the classifier with its output layer sized to the data set and returns the
metadata of its weights (input size, mean/std, the crop of the evaluation transform). ``pretrained=True`` takes
the library's own weights (torchvision's weights enum, timm's pretrained config; both download them once);
``pretrained=PATH`` loads a local file: a plain ``state_dict`` (what ``ssal export --format state_dict`` writes,
or what ``torch.save(model.state_dict(), PATH)`` gives), a dict holding one under ``state_dict`` / ``model``, or
an ssal checkpoint (its backbone f; the branches are left out). Every file loads with ``weights_only=True``.
timm is an optional dependency (``pip install 'ssal[timm]'``).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SSALError
from ..features import classifier_names

__all__ = [
    "SOURCES",
    "WeightsInfo",
    "create_zoo_backbone",
    "is_zoo_name",
    "list_zoo_models",
    "load_backbone_weights",
    "pretrained_info",
    "read_weights_file",
    "split_name",
    "tv_builder_options",
    "zoo_weights_info",
]

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "timm")
TIMM_MISSING = "timm models need the timm package: pip install 'ssal[timm]' (or pip install timm)"


@dataclass
class WeightsInfo:
    """What a model's weights expect: input size (C, H, W), normalisation and the evaluation crop fraction."""

    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def split_name(name: str) -> tuple[str | None, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; a registered name -> ``(None, name)``."""
    src, sep, base = str(name).partition(":")
    if not sep:
        return None, name
    if src not in SOURCES:
        raise SSALError(f"unknown model source {src!r} in {name!r}; use torchvision:<name> or timm:<name>")
    if not base:
        raise SSALError(f"model name {name!r} lacks the model after '{src}:'")
    return src, base


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` names a torchvision or timm model."""
    return split_name(name)[0] is not None


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise SSALError(TIMM_MISSING) from None
    return timm


def list_zoo_models(source: str) -> list[str]:
    """The classification models of torchvision or timm (without the ``source:`` prefix); timm missing -> []."""
    if source == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    try:
        return sorted(_timm().list_models())
    except SSALError:
        return []


def _check_name(src: str, base: str) -> None:
    if src == "torchvision":
        names = list_zoo_models("torchvision")
        if base not in names:
            hint = difflib.get_close_matches(base, names, n=5)
            raise SSALError(
                f"unknown torchvision model {base!r}"
                + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                + "; `ssal models` lists them"
            )
        return
    timm = _timm()
    if not timm.is_model(base):
        hint = difflib.get_close_matches(base.split(".")[0], timm.list_models(), n=5)
        raise SSALError(
            f"unknown timm model {base!r}"
            + (f" (did you mean {', '.join(hint)}?)" if hint else "")
            + "; `ssal models` lists them"
        )


# --- metadata of the weights -------------------------------------------------------------------------
def _tv_weights(base: str) -> Any:
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(base).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def zoo_weights_info(name: str, options: Mapping[str, Any] | None = None) -> WeightsInfo:
    """The metadata of ``name``'s default pretrained weights (no download): input size, mean/std, crop.

    A size given as a builder option (torchvision ``image_size``, timm ``img_size``) wins over the weights'.
    """
    src, base = split_name(name)
    options = dict(options or {})
    info = WeightsInfo(source=str(name))
    if src == "torchvision":
        _check_name(src, base)
        w = _tv_weights(base)
        if w is not None:
            t = w.transforms()
            crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
            info = WeightsInfo((3, crop, crop), tuple(t.mean), tuple(t.std), crop / resize, str(w))
        size = options.get("image_size")
    elif src == "timm":
        _check_name(src, base)
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(base)
        if cfg is not None:
            size3 = tuple(int(s) for s in cfg.input_size)
            info = WeightsInfo(size3, tuple(cfg.mean), tuple(cfg.std), float(cfg.crop_pct), f"timm:{base}")  # type: ignore[arg-type]
        size = options.get("img_size")
    else:
        raise SSALError(f"{name!r} is not a torchvision:<name> or timm:<name> model")
    if size is not None:
        s = size if isinstance(size, int) else int(list(size)[0])
        info.input_size = (3, int(s), int(s))
    return info


# --- building ------------------------------------------------------------------------------------------
def _output_layers(model: nn.Module, classes: int) -> list[str]:
    """Names of the output layer(s) with ``classes`` outputs: the last one and any auxiliary one (Inception).

    Not ``features.classifier_layer``: this runs while the model is built, before it records its classifier, and
    it must also find the auxiliary heads that are resized with it."""
    cands = [
        n
        for n, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == classes and m.kernel_size == (1, 1))
    ]
    if not cands:
        raise SSALError(f"cannot find the {classes}-class output layer of {type(model).__name__}")
    return [n for n in cands if n == cands[-1] or "aux" in n.lower()]


def _resize_classifier(model: nn.Module, names: list[str], num_classes: int) -> None:
    """Replace the layers ``names`` by freshly initialised ones with ``num_classes`` outputs."""
    modules = dict(model.named_modules())
    for n in names:
        m = modules[n]
        new: nn.Module
        if isinstance(m, nn.Linear):
            new = nn.Linear(m.in_features, num_classes, bias=m.bias is not None)
        else:
            assert isinstance(m, nn.Conv2d)
            new = nn.Conv2d(m.in_channels, num_classes, 1, bias=m.bias is not None)
        parent, _, attr = n.rpartition(".")
        setattr(modules[parent] if parent else model, attr, new)


def _offline_error(name: str, e: BaseException) -> SSALError:
    reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return SSALError(
        f"cannot fetch the pretrained weights of {name} ({type(e).__name__}: {reason}); on a machine without "
        "internet access, download them elsewhere and set model.pretrained=PATH (a state_dict file or an ssal "
        "checkpoint)"
    )


def _tv_weight_kwargs(base: str, w: Any) -> dict[str, Any]:
    """The builder arguments torchvision sets when it loads ``w`` (so that the model is rebuilt identically)."""
    if base.startswith("vit_"):
        return {"image_size": int(w.meta["min_size"][0])}
    if base in ("inception_v3", "googlenet"):
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    return {}


def tv_builder_options(base: str, pretrained: bool | str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``torchvision.models.get_model(base, num_classes=C, **options)`` needs to rebuild the model.

    A ViT is built at its default weights' image size with or without them (vit_h_14: 518 px), the size that
    ``model_input_size`` reports and the data are resized to.
    """
    w = _tv_weights(base)
    if w is None:
        return dict(options)
    kwargs = _tv_weight_kwargs(base, w) if pretrained is True else {}
    if base.startswith("vit_"):
        kwargs["image_size"] = int(w.meta["min_size"][0])
    return {**kwargs, **options}


def _build_torchvision(
    base: str, num_classes: int, pretrained: bool, options: dict[str, Any], fetch: bool = True
) -> nn.Module:
    from torchvision.models import get_model

    name = f"torchvision:{base}"
    try:
        if not pretrained:
            model = get_model(base, weights=None, num_classes=num_classes, **tv_builder_options(base, False, options))
            model.ssal_classifier = _output_layers(model, num_classes)
            return model
        w = _tv_weights(base)
        if w is None:
            raise SSALError(f"{name} has no pretrained weights in torchvision; use model.pretrained=PATH")
        if not fetch:  # the same architecture, weights to come from a checkpoint
            kwargs = {**_tv_weight_kwargs(base, w), **options, "num_classes": len(w.meta["categories"])}
            model = get_model(base, weights=None, **kwargs)
        else:
            try:
                model = get_model(base, weights=w, **options)
            except (OSError, RuntimeError) as e:  # URLError is an OSError; a truncated download a RuntimeError
                raise _offline_error(name, e) from None
    except SSALError:  # a ValueError too, but not about the options
        raise
    except (TypeError, ValueError) as e:
        raise SSALError(f"{name}: bad model.options {options}: {str(e).splitlines()[0]}") from None
    model.ssal_classifier = _output_layers(model, len(w.meta["categories"]))
    if len(w.meta["categories"]) != num_classes:
        _resize_classifier(model, model.ssal_classifier, num_classes)
    return model


def _build_timm(
    base: str, num_classes: int, pretrained: bool, options: dict[str, Any], fetch: bool = True
) -> nn.Module:
    timm = _timm()
    name = f"timm:{base}"
    try:
        model = timm.create_model(base, pretrained=False, num_classes=num_classes, **options)
    except (TypeError, ValueError, AssertionError) as e:
        raise SSALError(f"{name}: bad model.options {options}: {str(e).splitlines()[0]}") from None
    if pretrained and fetch:
        try:
            model = timm.create_model(base, pretrained=True, num_classes=num_classes, **options)
        except (OSError, RuntimeError, ValueError) as e:  # the hub's errors are OSErrors (FileNotFoundError, ...)
            raise _offline_error(name, e) from None
    cls = model.pretrained_cfg.get("classifier") if isinstance(getattr(model, "pretrained_cfg", None), dict) else None
    if cls:
        modules = dict(model.named_modules())
        model.ssal_classifier = [c for c in ([cls] if isinstance(cls, str) else list(cls)) if c in modules]
    return model


def create_zoo_backbone(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    options: Mapping[str, Any] | None = None,
    load_weights: bool = True,
) -> tuple[nn.Module, WeightsInfo]:
    """Build ``torchvision:<name>`` or ``timm:<name>`` with ``num_classes`` outputs, and its weights' metadata.

    ``pretrained``: False (random initialisation), True (the library's weights; needs internet once) or a PATH
    to a local weights file (see the module doc). The metadata of a PATH comes from its ssal metadata if it has
    some (an ssal checkpoint, or the JSON written next to an ``ssal export --format state_dict`` file), else
    from the model's default weights. ``load_weights=False`` builds the same architecture without fetching or
    reading any weights (a trained run's checkpoint provides them).
    """
    src, base = split_name(name)
    options = dict(options or {})
    info = zoo_weights_info(name, options)
    if src == "torchvision":
        model = _build_torchvision(base, num_classes, pretrained is True, options, load_weights)
    else:
        model = _build_timm(base, num_classes, pretrained is True, options, load_weights)
    if isinstance(pretrained, str) and pretrained and load_weights:
        meta = load_backbone_weights(model, pretrained, name)
        info = _merge_file_meta(info, meta)
    return model, info


def _merge_file_meta(info: WeightsInfo, meta: dict[str, Any]) -> WeightsInfo:
    out = WeightsInfo(info.input_size, info.mean, info.std, info.crop_pct, info.source, dict(meta))
    if meta.get("mean") and meta.get("std"):
        out.mean, out.std = tuple(meta["mean"]), tuple(meta["std"])
    return out


def pretrained_info(name: str, pretrained: bool | str, options: Mapping[str, Any] | None = None) -> WeightsInfo:
    """The metadata of the weights a model starts from (no download; a PATH is only read).

    torchvision/timm: their default weights' metadata, with mean/std of a PATH's ssal metadata when it has some;
    a registered model: the PATH's metadata only.
    """
    info = zoo_weights_info(name, options) if is_zoo_name(name) else WeightsInfo(source=name)
    if isinstance(pretrained, str) and pretrained:
        info = _merge_file_meta(info, read_weights_file(pretrained, meta_only=True)[1])
    return info


# --- local weights files ----------------------------------------------------------------------------------
def read_weights_file(
    path: str | os.PathLike, meta_only: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A backbone ``state_dict`` and its metadata from a local file (``weights_only`` loading).

    Accepts a plain state_dict, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers, and ssal checkpoints
    (the ``model.backbone.`` part; metadata: mean/std/class names of the run). A JSON file ``PATH.json`` beside
    the file (``ssal export --format state_dict``) adds its metadata. Not timm's ``load_state_dict``: timm is an
    optional extra, and it knows neither ssal checkpoints nor their metadata.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise SSALError(f"model.pretrained: weights file not found: {p}")
    obj = _load_safely(p, meta_only)
    meta = _sidecar_meta(p)
    if not isinstance(obj, Mapping):
        raise SSALError(f"model.pretrained: {p} holds a {type(obj).__name__}, not a state_dict")
    if isinstance(obj.get("ssal"), Mapping) and isinstance(obj.get("state_dict"), Mapping):  # an ssal checkpoint
        state = _checkpoint_backbone(obj, meta)
    elif not meta_only:
        state = _unwrapped_backbone(obj)
    if meta_only:
        return {}, meta
    state = {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise SSALError(f"model.pretrained: {p} holds no weights (no tensors found)")
    _check_finite(state, p)
    return state, meta


def _load_safely(p: Path, meta_only: bool) -> Any:
    """What ``torch.save`` wrote to ``p``, loaded with ``weights_only``; ``SSALError`` saying why it cannot be."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=meta_only)
    except Exception as e:  # corrupt file, or pickled objects that weights_only refuses
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if not zipfile.is_zipfile(p):  # torch's own text for such a file is about mmap and re-saving
            text = "not a file written by torch.save"
        elif "unsupported global" in str(e).lower() or "weights only load failed" in str(e).lower():
            # torch's text goes on for lines (with terminal escapes) on how to load it unsafely
            text = "it holds objects other than tensors and plain values (a whole pickled model? save its state_dict)"
        raise SSALError(f"model.pretrained: cannot load {p} safely: {text}") from None


def _sidecar_meta(p: Path) -> dict[str, Any]:
    """The metadata in the JSON file ``PATH.json`` beside ``p`` (empty without one)."""
    meta: dict[str, Any] = {}
    side = p.with_name(p.name + ".json")
    if side.is_file():
        try:
            meta.update(json.loads(side.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise SSALError(f"{side}: unreadable metadata ({e})") from None
    return meta


def _checkpoint_backbone(obj: Mapping[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``model.backbone.`` part of an ssal checkpoint; adds the run's metadata to ``meta``."""
    s = obj["ssal"]
    meta.update({k: s.get(k) for k in ("mean", "std", "class_names", "num_classes") if s.get(k) is not None})
    cfg = s.get("config") or {}
    meta.setdefault("model", (cfg.get("model") or {}).get("name"))
    return _under(obj["state_dict"], "model.backbone.")


def _unwrapped_backbone(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The backbone's weights in a state_dict, its usual wrappers, or the state_dict of an ``SSALModel`` or task."""
    state = obj
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    for prefix in ("model.backbone.", "backbone."):  # a task's state_dict, or an SSALModel's own
        if any(str(k).startswith(prefix) for k in state):
            return _under(state, prefix)
    return state


def _under(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` whose keys start with ``prefix``, with the prefix taken off."""
    return {str(k)[len(prefix) :]: v for k, v in state.items() if str(k).startswith(prefix)}


def _check_finite(state: dict[str, torch.Tensor], p: Path) -> None:
    """``SSALError`` naming the weights of ``state`` (read from ``p``) that hold NaN or Inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # training from them would stop at the first step with a NaN loss
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SSALError(f"model.pretrained: {p} has NaN/Inf weights ({', '.join(bad[:3])}{more}); it cannot be used")


def load_backbone_weights(model: nn.Module, path: str | os.PathLike, name: str = "the model") -> dict[str, Any]:
    """Load a local weights file into ``model``; returns the file's metadata.

    Every weight must match by name and shape, except the classifier's (``ssal.features.classifier_names``),
    which keeps its fresh initialisation when its class count differs (fine-tuning on another data set).
    """
    state, meta = read_weights_file(path)
    own = model.state_dict()
    heads = tuple(f"{c}." for c in classifier_names(model))
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k.startswith(heads)]
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k not in skipped]
    missing = [k for k in own if k not in state and not k.startswith(heads)]
    unexpected = [k for k in state if k not in own]
    if bad or missing or unexpected or len(missing) + len(skipped) >= len(own):
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("with another shape", bad)):
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        raise SSALError(f"model.pretrained: {path} does not fit {name}: " + ("; ".join(parts) or "no weight matches"))
    load = {k: v for k, v in state.items() if k not in skipped}
    kinds = [k for k, v in load.items() if v.is_floating_point() != own[k].is_floating_point()]
    if kinds:  # load_state_dict would cast them silently
        k = kinds[0]
        raise SSALError(f"model.pretrained: {path}: {k} holds {load[k].dtype} values where {name} has {own[k].dtype}")
    model.load_state_dict(load, strict=False)
    if skipped:
        log.info("%s: loaded %s; new classifier %s (its class count differs)", name, path, ", ".join(skipped))
    else:
        log.info("%s: loaded %s", name, path)
    return meta
