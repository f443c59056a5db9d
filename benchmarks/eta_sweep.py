"""+JP top-1 of a trained SSAL run for several eta (paper Sec. 3.4 / Table 1), on the validation and test splits.

Run: python benchmarks/eta_sweep.py RUN_DIR [--etas 0.1,0.2,0.3,0.5,0.7,1.0]
The model runs once per split; the joint prediction is recomputed per eta from the stored outputs.
"""

from __future__ import annotations

import argparse

import torch

from ssal.architecture import SSALOutput
from ssal.build import load_data
from ssal.prediction import joint_log_probs
from ssal.runs import load_run


@torch.no_grad()
def outputs(model: torch.nn.Module, images: torch.Tensor, batch: int = 1000) -> SSALOutput:
    """Model outputs on uint8 images (N, 3, H, W), concatenated over batches."""
    outs = [model(images[i : i + batch].float() / 255) for i in range(0, len(images), batch)]
    return SSALOutput(
        torch.cat([o.main for o in outs]), tuple(torch.cat(t) for t in zip(*[o.aux for o in outs], strict=True))
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run")
    p.add_argument("--etas", default="0.1,0.2,0.3,0.5,0.7,1.0")
    args = p.parse_args()
    etas = [float(e) for e in args.etas.split(",")]
    info = load_run(args.run)
    data = load_data(info.config.data, ("train", "val", "test"))
    print("| split | +TR | " + " | ".join(f"+JP eta={e:g}" for e in etas) + " |")
    print("|---|---|" + "---|" * len(etas))
    for name, split in (("val", data.val), ("test", data.test)):
        out, y = outputs(info.model, split.images), split.labels
        tr = 100 * (out.main.argmax(1) == y).float().mean().item()
        jp = [100 * (joint_log_probs(out, info.gammas, e).argmax(1) == y).float().mean().item() for e in etas]
        print(f"| {name} | {tr:.2f} | " + " | ".join(f"{v:.2f}" for v in jp) + " |")


if __name__ == "__main__":
    main()
