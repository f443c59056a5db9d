#!/usr/bin/env bash
# Package trained runs as release artefacts (docs/results.md, "Checkpoints"): for each NAME=RUN_DIR, the files
# `ssal evaluate` needs (config.yaml, groupings/, checkpoints/best.ckpt) plus the run's record (eval.json, eval.md,
# metrics.csv, confusion.npy), then SHA256SUMS and OUT_DIR.tar.gz. Nothing large goes into git.
#   benchmarks/package_release.sh OUT_DIR NAME=RUN_DIR [NAME=RUN_DIR ...]
#   ssal evaluate OUT_DIR/NAME --data-root /path/to/cifar100      # on any machine
set -euo pipefail
OUT=${1:?usage: benchmarks/package_release.sh OUT_DIR NAME=RUN_DIR [NAME=RUN_DIR ...]}
shift
[[ $# -ge 1 ]] || { echo "usage: benchmarks/package_release.sh OUT_DIR NAME=RUN_DIR [NAME=RUN_DIR ...]" >&2; exit 2; }
mkdir -p "$OUT"
for pair in "$@"; do
  name=${pair%%=*}
  run=${pair#*=}
  [[ -f "$run/checkpoints/best.ckpt" && -f "$run/config.yaml" ]] || { echo "not a trained run: $run" >&2; exit 2; }
  dst="$OUT/$name"
  mkdir -p "$dst/checkpoints"
  cp "$run/config.yaml" "$dst/"
  cp "$run/checkpoints/best.ckpt" "$dst/checkpoints/"
  [[ -d "$run/groupings" ]] && cp -r "$run/groupings" "$dst/"
  for f in eval.json eval.md metrics.csv confusion.npy confusion_classes.txt; do
    [[ -f "$run/$f" ]] && cp "$run/$f" "$dst/"
  done
done
(cd "$OUT" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)
tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
ls -l "$OUT.tar.gz"
