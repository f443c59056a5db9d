#!/usr/bin/env bash
# docs/results.md: SSAL vs baseline at equal wall time on the full CIFAR-100 (configs/cifar100_fastnet.yaml).
#   benchmarks/cifar100_equal_time.sh OUT_DIR [SEEDS...]
# 1. `ssal bench --config` measures the SSAL/baseline training-step time ratio R of the config (alternating steps);
#    run it on an otherwise idle machine. Written to OUT_DIR/step_cost.json (delete it to re-measure).
# 2. Per seed, a baseline with the step budget of the 4-epoch SSAL run of benchmarks/cifar100_results.sh:
#    4 x R epochs of steps, as 5 epochs of (4 R / 5) of the batches each (trainer.limit_train_batches), with its own
#    full schedule. Finished runs are skipped, unfinished ones resumed.
# Then: python benchmarks/summarize_results.py OUT_DIR
set -euo pipefail
OUT=${1:?usage: benchmarks/cifar100_equal_time.sh OUT_DIR [SEEDS...]}
shift
SEEDS=("${@:-0 1 2}")
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/cifar100_fastnet.yaml
mkdir -p "$OUT"
if [[ ! -f "$OUT/step_cost.json" ]]; then
  ssal bench --quick --config "$CONFIG" --steps 40 --json "$OUT/step_cost.json"
fi
R=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['ssal_step_cost'])" "$OUT/step_cost.json")
LIMIT=$(python -c "import sys; r = float(sys.argv[1]); assert 1 <= r <= 1.25, r; print(round(4 * r / 5, 4))" "$R")
echo "SSAL/baseline step ratio $R: baseline trains 5 epochs x $LIMIT of the batches (= $(python -c "print(round(4*$R, 2))") epochs)"
for seed in ${SEEDS[@]}; do
  run="$OUT/s$seed/baseline_eqtime"
  [[ -f "$run/eval.json" ]] && continue
  resume=()
  [[ -f "$run/checkpoints/last.ckpt" ]] && resume=(--resume)
  ssal train --config "$CONFIG" "${resume[@]}" run_dir="$run" seed="$seed" name=baseline_eqtime 'ssal.branches=[]' \
    trainer.epochs=5 trainer.limit_train_batches="$LIMIT"
  ssal evaluate "$run"
done
