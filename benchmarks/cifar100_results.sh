#!/usr/bin/env bash
# docs/results.md: SSAL vs baseline on the full CIFAR-100 with fastnet_cifar (configs/cifar100_fastnet.yaml).
#   benchmarks/cifar100_results.sh OUT_DIR [SEEDS...]
# For each seed: `ssal pipeline` (baseline -> confusion on the validation split -> join groups -> SSAL -> evaluate),
# then a longer baseline (5 epochs instead of 4) for the equal-wall-time comparison.
# Uses SSAL_CIFAR100_DIR if set, else the data folder ($SSAL_DATA/cifar100, downloaded on first use).
set -euo pipefail
OUT=${1:?usage: benchmarks/cifar100_results.sh OUT_DIR [SEEDS...]}
shift
SEEDS=("${@:-0 1 2}")
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/cifar100_fastnet.yaml
for seed in ${SEEDS[@]}; do
  ssal pipeline --config "$CONFIG" --out "$OUT/s$seed" seed="$seed"
done
for seed in ${SEEDS[@]}; do
  run="$OUT/s$seed/baseline_5ep"
  if [[ ! -f "$run/eval.md" ]]; then
    ssal train --config "$CONFIG" run_dir="$run" seed="$seed" name=baseline_5ep 'ssal.branches=[]' trainer.epochs=5 \
      --resume
    ssal evaluate "$run"
  fi
done
