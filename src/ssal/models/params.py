"""Parameter counts of the paper's architectures against the paper (Tables 1-3), and the docs table.

    python -m ssal.models.params                          # the markdown report on stdout
    python -m ssal.models.params --output docs/parameters.md
    python -m ssal.models.params --check                  # exit 1 if a count is out of its tolerance

Models are built on the ``meta`` device, so counting needs no memory and no real forward pass.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import atomic_write_text
from ..prediction import LinearCombination
from . import auxnets as aux
from .registry import create_model, list_models, model_entry, paper_branches

__all__ = ["PAPER_COUNTS", "PaperCount", "count_parameters", "main", "render_markdown"]

BACKBONE_TOL, SSAL_TOL = 0.02, 0.10


@dataclass(frozen=True)
class PaperCount:
    """One parameter count reported by the paper and how to rebuild the model it belongs to."""

    label: str
    model: str
    num_classes: int
    ssal: str | tuple[dict[str, Any], ...] | None  # None, "paper" or branch configs
    paper_m: float | None  # millions, None if the paper gives no count
    tolerance: float
    source: str
    linear_comb: bool = False  # add the +LC layer (paper Sec. 3.4, Table 2 "LinearComb")


PAPER_COUNTS: tuple[PaperCount, ...] = (
    PaperCount("ResNet-18", "resnet18_cifar", 100, None, 11.23, BACKBONE_TOL, "Table 1"),
    PaperCount("ResNet-18, 1 branch", "resnet18_cifar", 100, aux.RESNET18_CIFAR_SSAL[:1], 11.92, SSAL_TOL, "Table 1"),
    PaperCount("ResNet-18, 2 branches", "resnet18_cifar", 100, "paper", 12.83, SSAL_TOL, "Table 1"),
    PaperCount("ResNet-50", "resnet50_cifar", 100, None, 23.77, BACKBONE_TOL, "Table 1"),
    PaperCount("ResNet-50, 1 branch", "resnet50_cifar", 100, aux.RESNET50_CIFAR_SSAL[:1], 25.07, SSAL_TOL, "Table 1"),
    PaperCount("ResNet-50, 3 branches", "resnet50_cifar", 100, "paper", 28.89, SSAL_TOL, "Table 1, 3"),
    PaperCount("WRN 28-10", "wrn28_10", 100, None, 36.56, BACKBONE_TOL, "Table 1"),
    PaperCount("WRN 28-10, 1 branch", "wrn28_10", 100, aux.WRN_SSAL[:1], 38.19, SSAL_TOL, "Table 1, 3"),
    PaperCount("WRN 28-10, 3 branches", "wrn28_10", 100, "paper", 43.25, SSAL_TOL, "Table 1"),
    PaperCount("SE-WRN 16-8", "sewrn16_8", 100, None, 11.1, BACKBONE_TOL, "Table 3"),
    PaperCount("SE-WRN 16-8, SSAL", "sewrn16_8", 100, "paper", 14.9, SSAL_TOL, "Table 3"),
    PaperCount("DenseNet-BC 190-40", "densenet_bc_190_40", 100, None, 26.1, BACKBONE_TOL, "Table 3"),
    PaperCount("DenseNet-BC 190-40, SSAL", "densenet_bc_190_40", 100, "paper", 38.3, SSAL_TOL, "Table 3"),
    PaperCount("Tiny ResNet-18", "resnet18_tiny", 200, None, 11.2, BACKBONE_TOL, "Table 2"),
    PaperCount("WideResnet18", "wide_resnet18_tiny", 200, None, 25.3, SSAL_TOL, "Table 2"),
    PaperCount("DeepResnet18", "deep_resnet18_tiny", 200, None, 13.3, SSAL_TOL, "Table 2"),
    PaperCount("DWRResnet18", "dwr_resnet18_tiny", 200, None, 19.0, SSAL_TOL, "Table 2"),
    PaperCount("GapCatNoSSAL", "gapcat_nossal_resnet18_tiny", 200, None, 15.6, SSAL_TOL, "Table 2"),
    PaperCount("CatFCNoSSAL", "catfc_nossal_resnet18_tiny", 200, None, 13.6, SSAL_TOL, "Table 2"),
    PaperCount("LinearComb (SSAL x1 + LC)", "resnet18_tiny", 200, aux.TINY_SSAL_X1, 12.8, SSAL_TOL, "Table 2", True),
    PaperCount("SSAL x1", "resnet18_tiny", 200, aux.TINY_SSAL_X1, 12.6, SSAL_TOL, "Table 2"),
    PaperCount("SSAL x3", "resnet18_tiny", 200, "paper", 15.6, SSAL_TOL, "Table 2"),
    PaperCount("DenseNet-BC 100-12", "densenet_bc_100_12", 100, None, None, BACKBONE_TOL, "-"),
    PaperCount("ResNet-50 ImageNet", "resnet50_imagenet", 1000, None, None, BACKBONE_TOL, "-"),
    PaperCount("ResNet-50 ImageNet, SSAL", "resnet50_imagenet", 1000, "paper", None, SSAL_TOL, "-"),
    PaperCount("GapCatNoSSAL ImageNet (GC)", "gapcat_nossal_resnet50_imagenet", 1000, None, None, SSAL_TOL, "-"),
    PaperCount("WRN 28-10 joint output (E.1)", "wrn28_10_joint", 100, None, None, SSAL_TOL, "-"),
)


def build_on_meta(model: str, num_classes: int, ssal: str | Sequence[dict] | None = None) -> nn.Module:
    """Build a registered model on the ``meta`` device (no memory, the width probe costs nothing)."""
    with torch.device("meta"):
        return create_model(model, num_classes, ssal=None if ssal is None else ssal)


def _key(ssal: str | Sequence[dict] | None) -> Hashable:
    return ssal if ssal is None or isinstance(ssal, str) else tuple(tuple(sorted(b.items())) for b in ssal)


@functools.lru_cache(maxsize=64)
def _cached_meta(model: str, num_classes: int, key: Hashable) -> nn.Module:
    ssal = key if key is None or isinstance(key, str) else [dict(b) for b in key]  # type: ignore[union-attr]
    return build_on_meta(model, num_classes, ssal)


def count_parameters(
    model: str, num_classes: int, ssal: str | Sequence[dict] | None = None, linear_comb: bool = False
) -> int:
    """Number of trainable parameters of ``create_model(model, num_classes, ssal=ssal)`` (+ the +LC layer)."""
    n = sum(p.numel() for p in _cached_meta(model, num_classes, _key(ssal)).parameters())
    if linear_comb and ssal is not None:
        configs = paper_branches(model, num_classes) if ssal == "paper" else list(ssal)
        n += sum(p.numel() for p in LinearCombination(num_classes, [int(b["k"]) for b in configs]).parameters())
    return n


def _deviation(count: int, paper_m: float | None) -> float | None:
    return None if paper_m is None else count / (paper_m * 1e6) - 1.0


def check(rows: Sequence[PaperCount] = PAPER_COUNTS) -> list[tuple[PaperCount, int, float | None, bool]]:
    """(row, computed count, relative deviation, within tolerance) for every row."""
    out = []
    for r in rows:
        n = count_parameters(r.model, r.num_classes, r.ssal, r.linear_comb)
        dev = _deviation(n, r.paper_m)
        out.append((r, n, dev, dev is None or abs(dev) <= r.tolerance))
    return out


def _branches_text(ssal: str | tuple | None) -> str:
    if ssal is None:
        return "-"
    if ssal == "paper":
        return "paper"
    return ", ".join(f"{b['at']}:{b['k']}" for b in ssal)


CHOICES = """\
## Paper names of the baselines

| paper | registered name |
|---|---|
| Resnet18 (Table 2), SSAL x1 / x3 | `resnet18_tiny`, `ssal=list(auxnets.TINY_SSAL_X1)` / `ssal="paper"` |
| WideResnet18 | `wide_resnet18_tiny` |
| DeepResnet18 | `deep_resnet18_tiny` |
| DWRResnet18 (DWResnet18 in Table 2) | `dwr_resnet18_tiny` |
| GapCatNoSSAL (Table 2 / Table 4 "GC") | `gapcat_nossal_resnet18_tiny` / `gapcat_nossal_resnet50_imagenet` |
| CatFCNoSSAL | `catfc_nossal_resnet18_tiny` |
| LinearComb (+LC) | an SSAL model plus `ssal.prediction.LinearCombination` (fitted after training) |
| Supp. E.1 joint-output network | `wrn28_10_joint` |

The *NoSSAL models and `wrn28_10_joint` return one logits tensor (train them with plain cross-entropy); their
backbone positions stay available as `ssal_positions` under `net.backbone.`.

## Choices where the paper under-specifies an architecture

- **Positions.** `g1, g2, ...` are the `ssal_positions` aliases of each backbone (paper Fig. 4). ResNets:
  `g1` after the stem (for stems with a max-pool: after the first max-pooling, before the first residual block),
  `g{i+1}` after residual stage i. WRN and DenseNet have the seven points "before, after and in-between
  macro-blocks" of paper Sec. 4.2: `g1` stem, then (middle, end) of each of the three stages; the middle is after
  block `ceil(n/2)` of the n blocks (dense layers) of a stage. SE-WRN 16-8 has no positions in supp. Table 8: it
  uses the WRN 28-10 ones (g2, g5, g6). Branch *names* (g1, g2, ... in branch order, as in paper Sec. 4.2 for
  ResNet-18 CIFAR) differ from position aliases: the ResNet-18 CIFAR branches "after the first / second residual
  block" sit at positions g2 / g3.
- **Group counts** follow Sec. 4.4: C/5, C/3, C/2 (20/33/50 on CIFAR100, 200/334/500 on ImageNet). Tiny ImageNet
  (not given): 40/67/100 for SSAL x3 and 40 for SSAL x1 (supp. E.3 uses 40 groups). For another C the paper
  counts scale as k * C / C_paper, clipped to [2, C // 2].
- **ResNet-18 CIFAR heads** (paper Sec. 4.2: "two convolutional layers ... followed by an inception-like layer"):
  the convs of the CIFAR AuxNet1/AuxNet2 (5x5/2 + 3x3 at g2, 5x5 + 3x3 at g3, 128 filters) and an AuxInceptionE
  at 0.3 width (`incE0.3`).
- **Merged table cells.** Supp. Tables 7-10 lost their merged cells in the text. Read as: Table 7 AuxConv2 (3x3,
  128) and AuxConv3 (AuxInceptionE) belong to all three AuxNets; Table 8 as printed; Table 9 AuxConv2 = 3x3, 256
  for AuxNet1 and AuxNet3, AuxConv3 = two AuxInceptionE, the second with twice the channels (the footnote);
  Table 10 AuxNet1 = conv 3x3/2 256, C, D, E; AuxNet2 = C, D, E; AuxNet3 = C, E. (The footnote is printed under
  Table 10 but names "[AuxInceptionE] x 2" in AuxConv3, which only Table 9 has.)
- **DenseNet-BC 100-12** (used by the paper only to study positions) gets the DenseNet 190-40 branches.
- **AuxInception widths** (Inception-v3 widths scaled, `incE0.3` = 0.3 x): tuned to the paper's counts:
  ResNet-50 CIFAR 0.3; SE-WRN 16-8 0.4; WRN 28-10 / DenseNet AuxNet1 0.15 + 0.3, AuxNet3 0.35 + 0.7 (Table 1 needs a
  small AuxNet1 for "1 branch" and large AuxNet3 for "3 branches"); ImageNet 0.5 (no count in the paper).
- **Tiny ImageNet heads** are exactly supp. Table 6 (no stride; 3x3 convs at full resolution of the attach point).
- **Backbones.** WRN/SE-WRN use conv-BN-ReLU (post-activation) as stated in supp. Table 3; SE reduction 16.
  In the Tiny ImageNet ResNet-18 the stem ends in BN-ReLU, so the first pre-activation block skips its own.
  The CIFAR ResNet-50 stem is a plain 5x5 conv (the first pre-activation block normalises it). The ImageNet
  ResNet-50 is torchvision's `resnet50`.
- **Baselines.** DeepResnet18/DWRResnet18 put their four conv-BN-ReLU layers (256 / 512 filters) after the
  max-pool; the first residual block then projects to 64 channels. GapCatNoSSAL uses the SSAL x3 layout,
  CatFCNoSSAL the SSAL x1 layout (the counts of Table 2 match these); CatFCNoSSAL's FC-2048 has a ReLU.
  LinearComb is SSAL x1 plus the +LC layer of `ssal.prediction.LinearCombination`.
- **Paper inconsistencies.** Table 3 gives 38.2M for the SSAL WRN 28-10, the one-branch count of Table 1,
  although Sec. 4.4 says three branches; both are checked above. Table 1 also lists 43.25M for a ResNet-50 row
  (a copy of the WRN value), which is ignored.
- **E.1** (`wrn28_10_joint`): WRN 28-10 with AuxNet1 at g2 (20 groups), output = the joint log-probability of
  paper Sec. 3.4, trained with plain cross-entropy.
"""


def _summary(fn: object) -> str:
    """The first paragraph of a docstring on one line (markdown-table safe)."""
    para = (inspect.getdoc(fn) or "").split("\n\n")[0]
    return " ".join(para.split()).replace("|", "/").replace("``", "`")


def _counts_table() -> list[str]:
    lines = [
        "| configuration | model | C | branches (at:k) | computed (M) | paper (M) | deviation | tolerance | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, n, dev, ok in check():
        paper = "-" if r.paper_m is None else f"{r.paper_m:.2f}"
        devs = "-" if dev is None else f"{100 * dev:+.1f}%" + ("" if ok else " **out**")
        lines.append(
            f"| {r.label} | `{r.model}` | {r.num_classes} | {_branches_text(r.ssal)} | {n / 1e6:.2f} | {paper} "
            f"| {devs} | {100 * r.tolerance:.0f}% | {r.source} |"
        )
    return lines


def _models_table() -> list[str]:
    lines = ["| name | input | what | positions (alias = module) |", "|---|---|---|---|"]
    for name in list_models():
        e = model_entry(name)
        m = _cached_meta(name, e.paper_num_classes or 10, None)
        pos = ", ".join(f"{a}=`{mod}`" for a, mod in (getattr(m, "ssal_positions", {}) or {}).items())
        size = "x".join(str(s) for s in e.input_size)
        lines.append(f"| `{name}` | {size} | {_summary(e.builder)} | {pos or '-'} |")
    return lines


def _paper_ssal_table() -> list[str]:
    lines = ["| model | branch name | at (position) | module | k (paper C) | head spec |", "|---|---|---|---|---|---|"]
    for name in list_models():
        e = model_entry(name)
        if not e.paper_ssal:
            continue
        m = _cached_meta(name, e.paper_num_classes or 10, None)
        for i, b in enumerate(paper_branches(name)):
            module = m.ssal_positions.get(b["at"], b["at"])
            lines.append(f"| `{name}` | g{i + 1} | {b['at']} | `{module}` | {b['k']} | `{b['head']}` |")
    return lines


def render_markdown() -> str:
    """The whole ``docs/parameters.md``: counts vs the paper, models and positions, SSAL configs, choices."""
    parts = [
        "# Architectures and parameter counts",
        "",
        "Generated by `python -m ssal.models.params --output docs/parameters.md`; do not edit by hand.",
        "Counts are trainable parameters (BN running statistics and the class-to-group maps are buffers).",
        "Tolerance: 2% for backbones, 10% for SSAL variants and baselines (the paper under-specifies heads).",
        "",
        "## Computed vs paper (paper Tables 1-3)",
        "",
        *_counts_table(),
        "",
        "## Registered models and their attachment points",
        "",
        "Build any of them with `ssal.models.create_model(name, num_classes, ssal=None | [] | 'paper' | [...])`.",
        "",
        *_models_table(),
        "",
        "## The paper's SSAL branches (`ssal='paper'`)",
        "",
        *_paper_ssal_table(),
        "",
        CHOICES,
    ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Print or write the report; with ``--check`` return 1 if a count is outside its tolerance."""
    ap = argparse.ArgumentParser(prog="python -m ssal.models.params", description=__doc__.split("\n")[0])
    ap.add_argument("--output", "-o", type=Path, help="write the markdown here instead of stdout")
    ap.add_argument("--check", action="store_true", help="only check the counts; exit 1 if one is out of tolerance")
    args = ap.parse_args(argv)
    if args.check:
        bad = [(r, n, dev) for r, n, dev, ok in check() if not ok]
        for r, n, dev in bad:
            sys.stderr.write(f"{r.label}: {n / 1e6:.2f}M vs paper {r.paper_m}M ({100 * dev:+.1f}%)\n")
        return 1 if bad else 0
    text = render_markdown()
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
