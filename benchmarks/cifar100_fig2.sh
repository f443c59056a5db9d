#!/usr/bin/env bash
# docs/results.md: paper Fig. 2 at small scale on the full CIFAR-100 (configs/cifar100_fastnet.yaml).
#   benchmarks/cifar100_fig2.sh OUT_DIR CONFUSION [SEED]
# One SSAL run (4 epochs, one conv64 branch at g2) per criterion (join, split) and k (2, 4, 10, 20), all with the
# groups of the same baseline confusion matrix (CONFUSION, e.g. runs/c100/s0/baseline/confusion.npy), 1 seed.
# Finished runs are skipped, unfinished ones resumed. Then: python benchmarks/summarize_fig2.py OUT_DIR
# Uses SSAL_CIFAR100_DIR if set, else the data folder ($SSAL_DATA/cifar100, downloaded on first use).
set -euo pipefail
OUT=${1:?usage: benchmarks/cifar100_fig2.sh OUT_DIR CONFUSION [SEED]}
CONFUSION=${2:?usage: benchmarks/cifar100_fig2.sh OUT_DIR CONFUSION [SEED]}
SEED=${3:-0}
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/cifar100_fastnet.yaml
for criterion in join split; do
  for k in 2 4 10 20; do
    run="$OUT/${criterion}_k$k"
    [[ -f "$run/eval.json" ]] && continue
    resume=()
    [[ -f "$run/checkpoints/last.ckpt" ]] && resume=(--resume)
    ssal train --config "$CONFIG" "${resume[@]}" run_dir="$run" name="fig2_${criterion}_k$k" seed="$SEED" \
      ssal.confusion="$CONFUSION" ssal.criterion="$criterion" "ssal.branches=[{at: g2, k: $k, head: conv64-gap}]"
    ssal evaluate "$run"
  done
done
