"""Class activation maps per output of an SSAL model (paper Sec. 4.5, Fig. 6; supplementary Sec. D).

For the final prediction g_f (f's map for the +JP class), for each branch g_i (w.r.t. its predicted group) and
optionally for a baseline run ("org"), ``output_heatmap`` computes:

- CAM (Zhou et al. 2016) when the output is global average pooling followed by one linear layer:
  M_c = sum_k w_{c,k} A_k over the last feature map A (checked numerically: linear(mean(A)) == logits);
- Grad-CAM (Selvaraju et al. 2017) otherwise: ReLU(sum_k alpha_k A_k) with alpha_k = mean_{h,w} dy_c/dA_k.

``OutputSelector`` turns the multi-output SSAL model into a single-output model, so other CAM libraries (e.g.
``pytorch_grad_cam.GradCAM(OutputSelector(model, 0), [layer])``) work on it too. We compute the maps ourselves
with ``torch.autograd.grad`` on the feature map only: the caller's model keeps its training mode and its
parameter gradients, and every exception propagates.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import OUTPUT, SSALModel
from .errors import SSALError
from .files import atomic_write
from .prediction import class_log_probs
from .runs import RunInfo
from .runtime import class_names, eval_mode, image_transform, input_size, load_image, run_outputs

__all__ = [
    "DPI",
    "PANEL_SIZE",
    "CamResult",
    "OutputSelector",
    "Panel",
    "explain_batch",
    "explain_images",
    "figure_pixels",
    "find_feature_layer",
    "output_heatmap",
    "save_figure",
]

log = logging.getLogger(__name__)

#: Size of one figure panel in inches (width, height; the lower part holds the labels) and the PNG resolution.
PANEL_SIZE = (2.0, 2.9)
DPI = 100
METHODS = ("auto", "cam", "gradcam")


class OutputSelector(nn.Module):
    """One output of an SSAL model as a plain classifier: f's logits (``index=None``) or branch ``index``'s."""

    def __init__(self, model: SSALModel, index: int | None = None) -> None:
        super().__init__()
        if index is not None and not 0 <= index < len(model.branches):
            raise SSALError(f"branch index {index} out of range (the model has {len(model.branches)} branches)")
        self.model, self.index = model, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return self.model(x, with_branches=False).main
        return self.model(x, with_branches=True).aux[self.index]


def _candidates(sel: OutputSelector) -> dict[nn.Module, str]:
    """Modules whose output may be the output's last feature map: f's modules, or branch i's head + attach point."""
    model = sel.model
    if sel.index is None or model.branches[sel.index].at == OUTPUT:  # a head-less branch sees f's features
        return {m: n for n, m in model.backbone.named_modules() if n}
    br = model.branches[sel.index]
    mods = {m: f"branches.{sel.index}.head.{n}".rstrip(".") for n, m in br.head.named_modules()}
    at = dict(getattr(model.backbone, "ssal_positions", {}) or {}).get(br.at, br.at)
    mods[dict(model.backbone.named_modules())[at]] = f"backbone.{at}"
    return mods


def find_feature_layer(sel: OutputSelector, x: torch.Tensor) -> tuple[nn.Module, str, nn.Linear | None]:
    """The module producing the output's last 4-D feature map, its name, and the last linear layer (if any).

    A map of one pixel (a pooling module's (B, C, 1, 1) output, such as torchvision's ``avgpool``) has nothing to
    show, so the last larger map is taken when there is one."""
    order: list[tuple[nn.Module, torch.Tensor]] = []
    cands = _candidates(sel)
    hooks = [m.register_forward_hook(lambda m, i, o: order.append((m, o))) for m in cands]
    try:
        with torch.no_grad():
            sel(x[:1])
    finally:
        for h in hooks:
            h.remove()
    feats = [m for m, o in order if isinstance(o, torch.Tensor) and o.dim() == 4]
    maps = [m for m, o in order if m in feats and o.shape[2] * o.shape[3] > 1]
    feats = maps or feats
    if sel.index is not None and sel.model.branches[sel.index].at != OUTPUT:  # the attach point's hook fires after
        # the head it feeds: prefer the head's own maps
        head = set(sel.model.branches[sel.index].head.modules())
        feats = [m for m in feats if m not in head] + [m for m in feats if m in head]
    if not feats:
        raise SSALError("no 4-D feature map found for this output; CAM needs a convolutional network")
    linears = [m for m, _ in order if isinstance(m, nn.Linear)]
    return feats[-1], cands[feats[-1]], linears[-1] if linears else None


@dataclass
class CamResult:
    """Heatmaps of one output for a batch: ``cam`` at feature resolution, ``heatmap`` at image size in [0, 1]."""

    method: str
    layer: str
    targets: torch.Tensor  # (B,) class or group explained
    probs: torch.Tensor  # (B,) softmax probability of the target
    cam: torch.Tensor  # (B, h, w) raw map (CAM: signed; Grad-CAM: after ReLU)
    heatmap: torch.Tensor  # (B, H, W) upsampled, scaled to [0, 1]


def _is_gap_linear(logits: torch.Tensor, feats: torch.Tensor, linear: nn.Linear | None) -> bool:
    """Whether logits == linear(mean_{h,w}(feats)), i.e. the head is GAP then one linear layer."""
    if linear is None or feats.shape[1] != linear.in_features or logits.shape[1] != linear.out_features:
        return False
    with torch.no_grad():
        ref = linear(feats.mean((2, 3)))
    logits = logits.detach()
    return bool(torch.allclose(ref, logits, rtol=1e-4, atol=1e-4 * float(logits.abs().max().clamp_min(1.0))))


def _normalise(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling to ``size`` and min-max scaling of each map to [0, 1] (a constant map becomes 0)."""
    up = F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin((1, 2), keepdim=True)
    span = up.amax((1, 2), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))


def output_heatmap(
    model: SSALModel,
    x: torch.Tensor,
    index: int | None = None,
    targets: torch.Tensor | None = None,
    method: str = "auto",
) -> CamResult:
    """CAM or Grad-CAM of f (``index=None``) or of branch ``index`` for ``targets`` (default: its argmax).

    ``method``: ``auto`` (CAM where the head is GAP + linear, else Grad-CAM), ``cam`` or ``gradcam``.
    """
    if method not in METHODS:
        raise SSALError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    sel = OutputSelector(model, index)
    x = x.to(next(model.parameters()).device)
    with eval_mode(model):
        layer, name, linear = find_feature_layer(sel, x)
        store: dict[str, torch.Tensor] = {}

        def keep(m: nn.Module, i: object, o: torch.Tensor) -> torch.Tensor:
            store["a"] = o
            return o.clone()  # later in-place ops act on the copy, so A stays the tensor we differentiate

        handle = layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logits = sel(x.detach().requires_grad_(True)).float()  # (B, n)
                feats = store["a"]  # (B, K, h, w)
                t = logits.argmax(1) if targets is None else targets.to(logits.device).long()
                use_cam = method == "cam" or (method == "auto" and _is_gap_linear(logits, feats, linear))
                if method == "cam" and not _is_gap_linear(logits, feats, linear):
                    raise SSALError(f"CAM needs a GAP + linear head; output {name!r} has another head (use gradcam)")
                if use_cam:
                    cam = torch.einsum("bk,bkhw->bhw", linear.weight[t].float(), feats.float())
                else:
                    (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), feats)
                    cam = torch.relu(torch.einsum("bk,bkhw->bhw", grad.float().mean((2, 3)), feats.float()))
        finally:
            handle.remove()
    probs = logits.softmax(1).gather(1, t[:, None])[:, 0]
    cam = cam.detach()
    return CamResult("cam" if use_cam else "gradcam", name, t, probs.detach(), cam, _normalise(cam, x.shape[-2:]))


# --- one figure per image ----------------------------------------------------------------------------
@dataclass
class Panel:
    """One overlay of the figure: which output, what it predicts, and the members of the predicted group."""

    output: str  # "g_f", "g1", ..., "org"
    title: str
    members: list[str]
    heatmap: torch.Tensor  # (H, W) in [0, 1]
    method: str
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def _final_prediction(info: RunInfo, x: torch.Tensor) -> torch.Tensor:
    """+JP probabilities of a run (or +TR for a baseline), (B, C)."""
    return class_log_probs(run_outputs(info, x), info.gammas, info.eta).exp()


def explain_batch(
    info: RunInfo, x: torch.Tensor, baseline: RunInfo | None = None, method: str = "auto"
) -> list[list[Panel]]:
    """Panels for each image of ``x``: g_f (f's map for the final +JP class), each g_i (its predicted group), org."""
    names, model = class_names(info), info.model
    final = _final_prediction(info, x)
    pred = final.argmax(1)
    fmap = output_heatmap(model, x, None, pred, method)
    panels = [
        [Panel("g_f", f"g_f: {names[c]} ({final[b, c]:.2f})", [names[c]], fmap.heatmap[b], fmap.method)]
        for b, c in enumerate(pred.tolist())
    ]
    for i, (bname, g) in enumerate(zip(model.branch_names, info.groupings, strict=True)):
        r = output_heatmap(model, x, i, None, method)
        for b, grp in enumerate(r.targets.tolist()):
            members = [names[c] for c in g.groups()[grp]]
            panels[b].append(Panel(bname, f"{bname}: group {grp} ({r.probs[b]:.2f})", members, r.heatmap[b], r.method))
    if baseline is not None:
        bnames = class_names(baseline)
        r = output_heatmap(baseline.model, x, None, None, method)
        for b, c in enumerate(r.targets.tolist()):
            panels[b].append(Panel("org", f"org: {bnames[c]} ({r.probs[b]:.2f})", [bnames[c]], r.heatmap[b], r.method))
    return panels


def figure_pixels(num_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with the image plus ``num_panels`` overlays."""
    return round((num_panels + 1) * PANEL_SIZE[0] * DPI), round(PANEL_SIZE[1] * DPI)


def _label(members: Sequence[str], width: int = 24, max_lines: int = 8) -> str:
    text = textwrap.wrap(", ".join(members), width) or [""]
    if len(text) > max_lines:
        text = text[: max_lines - 1] + [f"... ({len(members)} classes)"]
    return "\n".join(text)


def explain_images(
    info: RunInfo,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    baseline: RunInfo | None = None,
    method: str = "auto",
) -> tuple[list[Path], list[tuple[str, str]]]:
    """One PNG per readable image into ``out_dir`` (``<stem>.png``); returns the PNGs and (file, error) pairs."""
    if baseline is not None and baseline.num_classes != info.num_classes:
        raise SSALError(f"the baseline has {baseline.num_classes} classes, the run {info.num_classes}")
    if baseline is not None and input_size(baseline) != input_size(info):
        raise SSALError(f"the baseline takes {input_size(baseline)} inputs, the run {input_size(info)}")
    transform, out_dir = image_transform(info), Path(out_dir)
    written: list[Path] = []
    errors: list[tuple[str, str]] = []
    used: set[str] = set()
    for p in paths:
        try:
            x = load_image(p, transform)[None]
        except SSALError as e:
            errors.append((str(p), str(e)))
            continue
        panels = explain_batch(info, x, baseline, method)[0]
        stem, n = Path(p).stem, 1
        while (name := stem if n == 1 else f"{stem}_{n}") in used:
            n += 1
        used.add(name)
        written.append(save_figure(x[0], panels, out_dir / f"{name}.png", Path(p).name))
    return written, errors


def save_figure(image: torch.Tensor, panels: Sequence[Panel], path: str | os.PathLike, title: str = "") -> Path:
    """The paper's Fig. 6 layout: the image, one overlay per output, the group's member classes under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)
    w, h = figure_pixels(len(panels))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(w / DPI, h / DPI), dpi=DPI, squeeze=False)
    axes = axes[0]
    axes[0].imshow(img)
    axes[0].set_title(textwrap.shorten(title, 28) if title else "input", fontsize=8)
    for ax, p in zip(axes[1:], panels, strict=True):
        ax.imshow(img)
        ax.imshow(p.heatmap.cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(textwrap.shorten(p.title, 30), fontsize=8)
        ax.text(0.5, -0.04, _label(p.members), transform=ax.transAxes, ha="center", va="top", fontsize=6.5)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.27, wspace=0.08)
    out = atomic_write(path, lambda q: fig.savefig(q, dpi=DPI, format="png"))
    plt.close(fig)
    return out
