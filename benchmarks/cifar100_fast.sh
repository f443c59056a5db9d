#!/usr/bin/env bash
# docs/results.md, accuracy per FLOP: configs/cifar100_fast.yaml (baseline and its variants) on the full CIFAR-100.
#   [ARMS="base ssal mixup randaugment"] benchmarks/cifar100_fast.sh OUT_DIR [SEEDS...] [-- key=value ...]
# ARMS (default "base ssal"): base, or any variant of the config.
# Per seed and arm: train, then evaluate the last checkpoint (the config validates on the test split for monitoring,
# so "best" would be chosen on test) without and with flip TTA; also the raw weights next to the EMA weights.
set -euo pipefail
OUT=${1:?usage: benchmarks/cifar100_fast.sh OUT_DIR [SEEDS...] [-- key=value ...]}
shift
SEEDS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do SEEDS+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#SEEDS[@]} -eq 0 ]] && SEEDS=(0 1 2)
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/cifar100_fast.yaml
read -r -a ARM_LIST <<< "${ARMS:-base ssal}"
for arm in "${ARM_LIST[@]}"; do
  for seed in "${SEEDS[@]}"; do
    run="$OUT/$arm/s$seed"
    variant=()
    [[ $arm != base ]] && variant=(--variant "$arm")
    if [[ ! -f "$run/eval_flip.json" ]]; then
      resume=()
      [[ -f "$run/checkpoints/last.ckpt" ]] && resume=(--resume)
      ssal train --config "$CONFIG" "${variant[@]}" "${resume[@]}" run_dir="$run" seed="$seed" "$@"
      ssal evaluate "$run" --checkpoint last
      ssal evaluate "$run" --checkpoint last --tta flip
    fi
    # the raw (not averaged) weights of the same run, for the EMA ablation
    python - "$run" <<'PY'
import sys, torch
from pathlib import Path
from ssal.runs import load_checkpoint, save_checkpoint
run = Path(sys.argv[1]); raw = run / "checkpoints" / "raw.ckpt"
ck = load_checkpoint(run / "checkpoints" / "last.ckpt")
if "current_model_state" in ck and not raw.is_file():
    ck["state_dict"] = ck.pop("current_model_state")
    save_checkpoint(ck, raw)
PY
    if [[ -f "$run/checkpoints/raw.ckpt" && ! -f "$run/eval_raw_flip.json" ]]; then
      ssal evaluate "$run" --checkpoint "$run/checkpoints/raw.ckpt" --tta flip   # -> eval_raw_flip.json
    fi
  done
done
