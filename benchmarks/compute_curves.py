"""Is SSAL worth its compute? Accuracy against *total* training compute on real CIFAR-100 (docs/results.md).

Arms (same backbone, recipe and branch as configs/cifar100_fastnet.yaml), per budget B (baseline epochs) and seed:
  base        the baseline, B epochs
  online      one-pass SSAL: groups from the run's own validation confusion at ssal.group_epoch = B * e0_frac
  base_eq     the baseline trained for the compute of ``online`` (B x r epochs of steps, r measured from FLOPs;
              ``--eq-arm superclass`` measures r on another arm)
  two_stage   the paper's SSAL: groups from ``base``'s validation confusion, then B epochs of SSAL
              (total compute: base + its confusion pass + the SSAL run)
  random      one-pass SSAL with random balanced groups of the same k, from the first step
  superclass  one-pass SSAL with the 20 CIFAR-100 superclasses, from the first step
  online_e*   one-pass SSAL with another group_epoch (the E0 trade-off)
  online_aux1 / online_k50 / online_g3 / online_g1
              one-pass SSAL with aux weight 1.0 / k = 50 groups / the branch at g3 or g1 (what else might make it win)
  regroup     one-pass SSAL that also recomputes its groups every B/4 epochs after group_epoch (ssal.regroup_every)
  weights     one-pass SSAL, groups from the similarity of f's class weights at group_epoch (no data pass)
  shipped     SSAL with the package's cifar100-join-20 groups (made once from a stronger model), from the first step

    python benchmarks/compute_curves.py OUT --budgets 2 4 8 --seeds 0 [--arms base online ...]
    python benchmarks/summarize_compute.py OUT

Finished runs are skipped, unfinished ones resumed; every run is evaluated into its eval.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from common import ssal

from ssal.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cifar100_fastnet.yaml"
ARMS = ("base", "online", "base_eq", "two_stage", "random", "superclass")
BRANCH = "{{at: {at}, k: {k}, head: conv64-gap}}"  # the config's branch, with another position or k
ABLATIONS = {
    "online_aux1": ["ssal.aux_weights=1.0"],
    "online_k50": ["ssal.branches=[" + BRANCH.format(at="g2", k=50) + "]"],
    "online_g3": ["ssal.branches=[" + BRANCH.format(at="g3", k=20) + "]"],
    "online_g1": ["ssal.branches=[" + BRANCH.format(at="g1", k=20) + "]"],
}


def final_flops(run: Path) -> float:
    return float(read_metrics(run / "metrics.csv")[-1]["train_flops"])


def epochs_done(run: Path) -> int:
    return len(read_metrics(run / "metrics.csv"))


def train(run: Path, epochs: int, seed: int, extra: list[str], common: list[str]) -> None:
    """Train (or resume, or skip) one run and evaluate it."""
    if not (run / "eval.json").is_file():
        if epochs_done(run) < epochs:
            resume = ["--resume"] if (run / "checkpoints" / "last.ckpt").is_file() else []
            ssal("train", "--config", str(CONFIG), *resume, f"run_dir={run}", f"seed={seed}",
                 f"trainer.epochs={epochs}", f"schedule.peak_epoch={epochs / 4:g}", *common, *extra)  # fmt: skip
        ssal("evaluate", str(run))


def run_budget(
    out: Path, budget: int, seed: int, arms: list[str], e0_frac: float, common: list[str], eq_arm: str = "online"
) -> None:
    root = out / f"b{budget}" / f"s{seed}"
    e0 = budget * e0_frac
    base_run = root / "base"
    for arm in arms:
        run = root / arm
        if arm == "base":
            train(run, budget, seed, ["ssal.branches=[]"], common)
        elif arm in ABLATIONS:
            train(run, budget, seed, ["ssal.groupings=online", f"ssal.group_epoch={e0:g}", *ABLATIONS[arm]], common)
        elif arm == "online" or arm.startswith("online_e"):
            g0 = e0 if arm == "online" else float(arm.removeprefix("online_e"))
            train(run, budget, seed, ["ssal.groupings=online", f"ssal.group_epoch={g0:g}"], common)
        elif arm == "regroup":
            train(run, budget, seed, ["ssal.groupings=online", f"ssal.group_epoch={e0:g}",
                                      f"ssal.regroup_every={budget / 4:g}"], common)  # fmt: skip
        elif arm == "random":
            train(run, budget, seed, ["ssal.groupings=random", f"ssal.grouping_seed={seed}"], common)
        elif arm == "weights":
            train(run, budget, seed, ["ssal.groupings=weights", f"ssal.group_epoch={e0:g}"], common)
        elif arm == "shipped":
            train(run, budget, seed, ["ssal.groupings=cifar100-join-20"], common)
        elif arm == "superclass":
            train(run, budget, seed, ["ssal.groupings=superclasses"], common)
        elif arm == "two_stage":
            conf = base_run / "confusion.npy"
            if not conf.is_file():
                ssal("confusion", str(base_run))
            train(run, budget, seed, ["ssal.groupings=confusion", f"ssal.confusion={conf}"], common)
        elif arm == "base_eq":
            made = root / "base_eq.json"
            if made.is_file() and json.loads(made.read_text()).get("arm", "online") != eq_arm:
                raise SystemExit(f"{run} matches the compute of another arm ({made}); give another OUT")
            if not (root / eq_arm / "metrics.csv").is_file():
                raise SystemExit(f"base_eq needs the {eq_arm} run of budget {budget}: put {eq_arm} before base_eq")
            r = final_flops(root / eq_arm) / final_flops(base_run)  # SSAL's compute in baseline-run units
            steps = budget * r
            epochs = math.ceil(steps - 1e-9)
            limit = round(steps / epochs, 4)
            info = {"ratio": r, "epochs": epochs, "limit": limit, "arm": eq_arm}
            (root / "base_eq.json").write_text(json.dumps(info) + "\n")
            train(run, epochs, seed, ["ssal.branches=[]", f"trainer.limit_train_batches={limit}"], common)
        else:
            raise SystemExit(f"unknown arm {arm!r}; choose from {ARMS} or online_e<E0>")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS))
    p.add_argument("--e0-frac", type=float, default=0.25, help="group_epoch of the online arm, as a fraction of B")
    p.add_argument("--eq-arm", default="online", help="the SSAL arm whose compute base_eq matches")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. data.root=DIR)")
    a = p.parse_intermixed_args()
    for seed in a.seeds:
        for b in a.budgets:
            run_budget(a.out, b, seed, a.arms, a.e0_frac, a.overrides, a.eq_arm)


if __name__ == "__main__":
    main()
