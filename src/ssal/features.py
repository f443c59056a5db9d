"""What a backbone produces at its attach points: the feature layout, and the positions a model declares.

Intermediate features of image classifiers come in three layouts:

- ``nchw``: feature maps (B, C, H, W) (ResNet, EfficientNet, ConvNeXt stages, ...);
- ``nhwc``: channels-last maps (B, H, W, C) (Swin stages in timm and torchvision, the inside of ConvNeXt blocks);
- ``tokens``: token sequences (B, N, D) (ViT, DeiT), possibly with prefix tokens before the patch tokens:
  ``tokens_cls`` (one class token), ``tokens_pP`` (P prefix tokens: class, distillation or register tokens).

A 2-D output (B, C) is a ``vector``. The layout of an attach point is, in this order: what the branch states
(``Branch(layout=...)``, ``layout:`` in a config); what the model declares for that exact module (timm
``feature_info`` with its ``output_fmt``, known torchvision families, or a ``ssal_layouts`` dict on the backbone);
otherwise what the output shape of the width probe proves (a map from a square input has two equal spatial sizes;
a token count minus exactly one possible prefix count is a square grid), and if that is not enough, which axes
change when the probe runs again at twice the input size (the spatial ones; the channel axis stays). A shape that
still fits more than one layout is an error that says which ``layout:`` to write: the layout is never guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .errors import SSALError

__all__ = [
    "LAYOUT_HELP",
    "AmbiguousLayoutError",
    "Layout",
    "classifier_layer",
    "classifier_names",
    "declared_layouts",
    "default_positions",
    "infer_layout",
    "prefix_tokens_hint",
]

LAYOUT_HELP = "nchw (B, C, H, W), nhwc (B, H, W, C), tokens (B, N, D), tokens_cls (class token first), tokens_pP"
_TOKENS = re.compile(r"^tokens(?:_cls|_p(\d+))?$")
MAX_PREFIX = 8  # class + distillation + register tokens considered when a token count is read from the probe


class AmbiguousLayoutError(SSALError):
    """The output shape of an attach point fits more than one layout (state it with ``layout:``)."""


@dataclass(frozen=True)
class Layout:
    """The layout of a feature tensor: ``kind`` is nchw, nhwc, tokens or vector; ``prefix`` counts prefix tokens."""

    kind: str
    prefix: int = 0

    @classmethod
    def parse(cls, text: str | Layout) -> Layout:
        """``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"tokens_cls"``, ``"tokens_p5"`` or ``"vector"``."""
        if isinstance(text, Layout):
            return text
        t = str(text).strip().lower()
        if t in ("nchw", "nhwc", "vector"):
            return cls(t)
        m = _TOKENS.match(t)
        if m:
            return cls("tokens", 1 if t == "tokens_cls" else int(m[1] or 0))
        raise SSALError(f"unknown layout {text!r}; use {LAYOUT_HELP}")

    def __str__(self) -> str:
        if self.kind != "tokens":
            return self.kind
        return "tokens" if self.prefix == 0 else "tokens_cls" if self.prefix == 1 else f"tokens_p{self.prefix}"

    @property
    def rank(self) -> int:
        """The number of dimensions (with the batch) a tensor of this layout has."""
        return {"nchw": 4, "nhwc": 4, "tokens": 3, "vector": 2}[self.kind]

    def channels(self, shape: Sequence[int]) -> int:
        """The feature width (C or D) of a tensor of ``shape`` in this layout."""
        return int(shape[1]) if self.kind in ("nchw", "vector") else int(shape[-1])

    def grid(self, shape: Sequence[int]) -> tuple[int, int] | None:
        """The spatial grid (H, W): of a map, or of the patch tokens when their count is a square."""
        if self.kind == "nchw":
            return int(shape[2]), int(shape[3])
        if self.kind == "nhwc":
            return int(shape[1]), int(shape[2])
        if self.kind == "tokens":
            n = int(shape[1]) - self.prefix
            s = math.isqrt(max(n, 0))
            return (s, s) if n > 0 and s * s == n else None
        return None


def _squares(n: int, prefixes: Sequence[int]) -> list[int]:
    return [p for p in prefixes if n - p > 0 and math.isqrt(n - p) ** 2 == n - p]


def infer_layout(
    shape: Sequence[int],
    where: str,
    stated: str | Layout | None = None,
    declared: Layout | None = None,
    prefix_hint: int | None = None,
    input_hw: tuple[int, int] | None = None,
    shape_alt: Sequence[int] | None = None,
) -> tuple[Layout, str]:
    """The layout of the output ``shape`` of attach point ``where`` and how it was known (stated/model/probe).

    ``shape_alt`` is the output shape for an input of another size, if known. Raises ``SSALError`` when the stated
    layout does not fit the shape, ``AmbiguousLayoutError`` when the shapes do not prove a layout.
    """
    shape = tuple(int(s) for s in shape)
    rank = len(shape)
    if stated is not None:
        return _stated_layout(shape, where, stated), "stated"
    if rank == 2:
        return Layout("vector"), "probe"
    if declared is not None and declared.rank == rank and (declared.kind != "tokens" or shape[1] > declared.prefix):
        if rank == 4:
            _check_declared_map(shape, where, declared, input_hw)
        return declared, "model"
    if rank == 4:
        return _probed_map_layout(shape, where, input_hw, shape_alt), "probe"
    if rank == 3:
        return _token_layout(shape, where, prefix_hint, shape_alt)
    raise SSALError(f"attach point {where!r}: a {rank}-D output {shape} is not a feature map, tokens or a vector")


def _stated_layout(shape: tuple[int, ...], where: str, stated: str | Layout) -> Layout:
    """The layout a branch states; ``SSALError`` if it does not fit the output ``shape``."""
    lay = Layout.parse(stated)
    if lay.rank != len(shape):
        raise SSALError(f"attach point {where!r}: layout {lay} needs a {lay.rank}-D output, got shape {shape}")
    if lay.kind == "tokens" and shape[1] <= lay.prefix:
        raise SSALError(f"attach point {where!r}: layout {lay} but only {shape[1]} tokens in {shape}")
    return lay


def _check_declared_map(shape: tuple[int, ...], where: str, declared: Layout, input_hw: tuple[int, int] | None) -> None:
    """``SSALError`` when the 4-D output ``shape`` proves a map layout other than the one the model declares."""
    probed = _map_layout(shape, input_hw)
    if probed is not None and probed != declared.kind:
        hint = f"set the branch's layout (layout: one of {LAYOUT_HELP})"
        raise SSALError(
            f"attach point {where!r}: the model declares {declared} but its output {shape} is {probed}; {hint}"
        )


def _probed_map_layout(
    shape: tuple[int, ...], where: str, input_hw: tuple[int, int] | None, shape_alt: Sequence[int] | None
) -> Layout:
    """nchw or nhwc as the probe's output shapes prove it; ``AmbiguousLayoutError`` if they do not."""
    kind = _map_layout(shape, input_hw) or _moved_axes(shape, shape_alt)
    if kind is None:
        raise AmbiguousLayoutError(
            f"cannot tell the layout of attach point {where!r} from its output shape {shape}: "
            "set the branch's layout (layout: nchw for (B, C, H, W), layout: nhwc for (B, H, W, C))"
        )
    return Layout(kind)


def _token_layout(
    shape: tuple[int, ...], where: str, prefix_hint: int | None, shape_alt: Sequence[int] | None
) -> tuple[Layout, str]:
    """The token layout of a 3-D output and how it was known (model/probe); ``SSALError`` if it is not proven."""
    n = shape[1]
    if prefix_hint is not None and _squares(n, [prefix_hint]):
        return Layout("tokens", prefix_hint), "model"
    if shape_alt is not None and len(shape_alt) == 3 and int(shape_alt[2]) != shape[2]:
        raise SSALError(
            f"attach point {where!r}: its output {shape} is a (B, D, N) sequence (the last axis grows with the "
            "input); attach the branch to a module with (B, N, D) tokens or a map"
        )
    found = _prefix_counts(n, prefix_hint, shape_alt)
    if len(found) == 1:
        return Layout("tokens", found[0]), "probe"
    raise AmbiguousLayoutError(
        f"cannot tell the layout of attach point {where!r} from its output shape {shape}: {n} tokens "
        + (f"could have {' or '.join(map(str, found))} prefix tokens" if found else "do not form a square grid")
        + "; set the branch's layout (layout: tokens, tokens_cls or tokens_pP for P prefix tokens)"
    )


def _prefix_counts(n: int, prefix_hint: int | None, shape_alt: Sequence[int] | None) -> list[int]:
    """The prefix token counts ``n`` tokens may have (one when the shapes prove it) that leave a square grid."""
    found = _squares(n, range(MAX_PREFIX + 1))
    if prefix_hint is not None and _squares(n, [0]):
        found = [0]  # e.g. a ViT's patch embedding: the square grid, before the class token is added
    if len(found) != 1 and shape_alt is not None and len(shape_alt) == 3:
        grown = int(shape_alt[1]) - n  # twice the side: 4x the patch tokens, the prefix tokens stay
        if grown > 0 and grown % 3 == 0 and 0 <= n - grown // 3 <= MAX_PREFIX:
            found = [n - grown // 3]
    return found


def _map_layout(shape: tuple[int, ...], input_hw: tuple[int, int] | None) -> str | None:
    """nchw or nhwc when a 4-D shape proves it: a square input gives two equal spatial sizes next to each other."""
    if input_hw is not None and input_hw[0] != input_hw[1]:
        return None  # non-square input: the spatial sizes differ, the shape proves nothing
    _, a, b, c = shape
    if b == c and a != b:
        return "nchw"
    if a == b and b != c:
        return "nhwc"
    return None


def _moved_axes(shape: tuple[int, ...], alt: Sequence[int] | None) -> str | None:
    """nchw or nhwc from which axes changed with the input size (spatial axes change, the channel axis does not)."""
    if alt is None or len(alt) != 4:
        return None
    moved = [int(a) != int(b) for a, b in zip(shape[1:], tuple(alt)[1:], strict=True)]
    return {(False, True, True): "nchw", (True, True, False): "nhwc"}.get(tuple(moved))  # type: ignore[arg-type]


# --- what known model families declare ---------------------------------------------------------------
def _is_timm(backbone: nn.Module) -> bool:
    return type(backbone).__module__.startswith("timm.")


def _is_torchvision(backbone: nn.Module, cls: str) -> bool:
    return type(backbone).__module__.startswith("torchvision.models") and type(backbone).__name__ == cls


def prefix_tokens_hint(backbone: nn.Module) -> int | None:
    """How many prefix tokens the model's token sequences carry (timm ``num_prefix_tokens``, torchvision ViT: 1)."""
    n = getattr(backbone, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    if _is_torchvision(backbone, "VisionTransformer"):
        return 1
    if _is_timm(backbone):
        return 0  # timm models with prefix tokens say how many (num_prefix_tokens)
    return None


def declared_layouts(backbone: nn.Module) -> dict[str, Layout]:
    """Layouts the model declares for some of its module names (exact names)."""
    out: dict[str, Layout] = {}
    names = [n for n, _ in backbone.named_modules() if n]
    if _is_timm(backbone):
        fmt = str(getattr(backbone, "output_fmt", "NCHW") or "NCHW").lower()
        prefix = prefix_tokens_hint(backbone)
        for f in _timm_feature_info(backbone):
            mod = f.get("module")
            if not mod:
                continue
            if prefix is not None and hasattr(backbone, "blocks") and str(mod).startswith("blocks"):
                out[mod] = Layout("tokens", prefix)
            elif fmt in ("nhwc", "nchw"):
                out[mod] = Layout(fmt)
    elif _is_torchvision(backbone, "VisionTransformer"):
        for n in names:
            if n == "encoder" or n == "encoder.ln" or re.fullmatch(r"encoder\.layers(\.encoder_layer_\d+)?", n):
                out[n] = Layout("tokens", 1)
    elif _is_torchvision(backbone, "SwinTransformer"):
        for n in names:
            if n == "norm" or re.fullmatch(r"features\.\d+|features\.[1-9]\d*\.\d+", n):
                out[n] = Layout("nhwc")
    extra = getattr(backbone, "ssal_layouts", None) or {}
    out.update({str(k): Layout.parse(v) for k, v in dict(extra).items()})
    return out


def _timm_feature_info(backbone: nn.Module) -> list[dict]:
    fi = getattr(backbone, "feature_info", None)
    if fi is None:
        return []
    if not isinstance(fi, list):  # timm's FeatureInfo object
        fi = getattr(fi, "info", [])
    return [dict(f) for f in fi if isinstance(f, dict)]


#: Stage outputs of torchvision families, paper-style positions g1..gN (shallow to deep).
_TORCHVISION_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ResNet", ("layer1", "layer2", "layer3", "layer4")),
    ("RegNet", ("trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output.block4")),
    ("DenseNet", ("features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4")),
    ("ConvNeXt", ("features.1", "features.3", "features.5", "features.7")),
    ("SwinTransformer", ("features.1", "features.3", "features.5", "features.7")),
    ("ShuffleNetV2", ("stage2", "stage3", "stage4")),
    ("MaxVit", ("blocks.0", "blocks.1", "blocks.2", "blocks.3")),
    ("GoogLeNet", ("inception3b", "inception4e", "inception5b")),
    ("Inception3", ("Mixed_5d", "Mixed_6e", "Mixed_7c")),
    ("MNASNet", tuple(f"layers.{i}" for i in range(8, 14))),
)


def default_positions(backbone: nn.Module) -> dict[str, str]:
    """Aliases g1..gN of a model's stage outputs: its own ``ssal_positions``, timm ``feature_info``, or the
    stages of a known torchvision family (ViT: every encoder layer; EfficientNet/MobileNet: every ``features.i``;
    VGG/AlexNet/SqueezeNet: every max pooling)."""
    own = getattr(backbone, "ssal_positions", None)
    if own:
        return dict(own)
    names = {n for n, _ in backbone.named_modules() if n}
    mods: list[str] = []
    if _is_timm(backbone):
        mods = [str(f["module"]) for f in _timm_feature_info(backbone) if f.get("module") in names]
    elif type(backbone).__module__.startswith("torchvision.models"):
        cls = type(backbone).__name__
        mods = next((list(m) for c, m in _TORCHVISION_STAGES if c == cls), [])
        if cls == "VisionTransformer":
            mods = sorted((n for n in names if re.fullmatch(r"encoder\.layers\.encoder_layer_\d+", n)), key=_num)
        elif cls in ("EfficientNet", "MobileNetV2", "MobileNetV3"):
            mods = sorted((n for n in names if re.fullmatch(r"features\.\d+", n)), key=_num)[1:-1]
        elif cls in ("VGG", "AlexNet", "SqueezeNet"):  # the end of every stage: its max pooling
            mods = [n for n, m in backbone.named_modules() if n.startswith("features.") and isinstance(m, nn.MaxPool2d)]
    modules = dict(backbone.named_modules())
    out = {}
    for m in mods:
        mod = modules.get(m)
        if isinstance(mod, nn.ModuleList) and len(mod):  # never called as a whole: its last block's output
            m = f"{m}.{len(mod) - 1}"
        if m in modules:
            out[f"g{len(out) + 1}"] = m
    return out


def _num(name: str) -> int:
    return int(re.findall(r"\d+", name)[-1])


def classifier_names(backbone: nn.Module) -> list[str]:
    """Module names of the classifier that produces f's logits (kept trainable when the backbone is frozen).

    ``ssal_classifier`` on the backbone (set by ``ssal.models.create_model``), timm's ``pretrained_cfg``, else the
    last ``nn.Linear`` of the model.
    """
    modules = dict(backbone.named_modules())
    own = getattr(backbone, "ssal_classifier", None)
    if own:
        return [n for n in own if n in modules]
    cfg = getattr(backbone, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        c = cfg["classifier"]
        found = [n for n in ([c] if isinstance(c, str) else list(c)) if n in modules]
        if found:
            return found
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    return linears[-1:]


def classifier_layer(backbone: nn.Module, num_classes: int | None = None) -> nn.Linear | nn.Conv2d | None:
    """f's classifier module (``classifier_names``, an Inception-style auxiliary head left out): a Linear or a
    1x1 Conv2d, with ``num_classes`` outputs when that is given; None if the backbone has none."""
    modules = dict(backbone.named_modules())
    names = [n for n in classifier_names(backbone) if "aux" not in n.lower()]
    layer = modules[names[0]] if names else None
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        return None
    outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return layer if num_classes is None or outputs == num_classes else None
