#!/usr/bin/env bash
# Issue 5 / docs/results.md: SSAL vs baseline at equal wall time on the full CIFAR-100 (configs/cifar100_fastnet.yaml).
#   benchmarks/cifar100_equal_time.sh OUT_DIR [SEEDS...]
# An SSAL step costs ~1.16x a baseline step (`ssal bench`), so SSAL trains 6 epochs and the baseline 7
# (6 x 1.16 = 6.96 baseline epochs): each with its own full schedule. SSAL's groups come from the seed's 4-epoch
# baseline confusion written by benchmarks/cifar100_results.sh (OUT_DIR/s<seed>/baseline/confusion.npy).
# Finished runs are skipped, unfinished ones resumed. Then: python benchmarks/summarize_results.py OUT_DIR
set -euo pipefail
OUT=${1:?usage: benchmarks/cifar100_equal_time.sh OUT_DIR [SEEDS...]}
shift
SEEDS=("${@:-0 1 2}")
SSAL_EPOCHS=${SSAL_EPOCHS:-6}
BASE_EPOCHS=${BASE_EPOCHS:-7}
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/cifar100_fastnet.yaml
train() {  # run_dir, then overrides
  local run=$1
  shift
  [[ -f "$run/eval.json" ]] && return 0
  local resume=()
  [[ -f "$run/checkpoints/last.ckpt" ]] && resume=(--resume)
  ssal train --config "$CONFIG" "${resume[@]}" run_dir="$run" "$@"
  ssal evaluate "$run"
}
for seed in ${SEEDS[@]}; do
  confusion="$OUT/s$seed/baseline/confusion.npy"
  [[ -f "$confusion" ]] || { echo "missing $confusion: run benchmarks/cifar100_results.sh first" >&2; exit 2; }
  train "$OUT/s$seed/ssal_${SSAL_EPOCHS}ep" seed="$seed" name="ssal_${SSAL_EPOCHS}ep" ssal.confusion="$confusion" \
    trainer.epochs="$SSAL_EPOCHS"
  train "$OUT/s$seed/baseline_${BASE_EPOCHS}ep" seed="$seed" name="baseline_${BASE_EPOCHS}ep" 'ssal.branches=[]' \
    trainer.epochs="$BASE_EPOCHS"
done
