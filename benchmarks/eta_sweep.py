"""+JP top-1 of a trained SSAL run for several eta (paper Sec. 3.4 / Table 1), on the validation and test splits.

Run: python benchmarks/eta_sweep.py RUN_DIR [--etas 0.1,0.2,0.3,0.5,0.7,1.0]
The model runs once per split; the joint prediction is recomputed per eta from the stored outputs.
"""

from __future__ import annotations

import argparse

from ssal.build import load_data
from ssal.evaluation import collect_outputs
from ssal.prediction import joint_log_probs
from ssal.runs import load_run


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
        batches = [
            (split.images[i : i + 1000].float() / 255, split.labels[i : i + 1000]) for i in range(0, len(split), 1000)
        ]
        out, y = collect_outputs(info.model, batches)
        tr = 100 * (out.main.argmax(1) == y).float().mean().item()
        jp = [100 * (joint_log_probs(out, info.gammas, e).argmax(1) == y).float().mean().item() for e in etas]
        print(f"| {name} | {tr:.2f} | " + " | ".join(f"{v:.2f}" for v in jp) + " |")


if __name__ == "__main__":
    main()
