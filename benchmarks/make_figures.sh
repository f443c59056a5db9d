#!/usr/bin/env bash
# Figures of docs/interpret.md from a trained CIFAR-100 SSAL run (and optionally its baseline):
#   docs/figures/explain_correct.png, docs/figures/explain_wrong.png   (ssal explain, paper Fig. 6 layout)
#   docs/figures/attack_fgsm.png, docs/figures/attack_bim.png          (ssal attack, supplementary Fig. 5 layout)
# and the attack tables as docs/figures/attack_{fgsm,bim}.csv.
#
# Usage: benchmarks/make_figures.sh RUN_DIR [BASELINE_RUN_DIR] [N_ATTACK_IMAGES (default 1000)]
# Takes a few minutes on a CPU for a ResNet-18 (BIM: 10 gradient steps per eps and image).
set -euo pipefail

RUN=${1:?usage: benchmarks/make_figures.sh RUN_DIR [BASELINE_RUN_DIR] [N_ATTACK_IMAGES]}
BASELINE=${2:-}
N=${3:-1000}
PY=${PYTHON:-python}
OUT=docs/figures
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# 1. Two test images: the first one the joint prediction gets right and the first one it gets wrong.
"$PY" - "$RUN" "$TMP/img" <<'EOF'
import sys
from pathlib import Path

import torch
from PIL import Image

from ssal.build import load_data
from ssal.inference import predict_tensor
from ssal.runs import load_run

info = load_run(sys.argv[1])
test = load_data(info.config.data, ("test",)).test
pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:500]  # the file is sorted by class
x, y = test.images[pick].float() / 255, test.labels[pick]
rows = [r for i in range(0, len(x), 100) for r in predict_tensor(info, x[i : i + 100], top=1)]
pred = torch.tensor([r["jp"][0].index for r in rows])  # +JP top-1
out = Path(sys.argv[2])
out.mkdir(parents=True)
for tag, hit in (("correct", pred == y), ("wrong", pred != y)):
    j = int(hit.nonzero()[0])
    name = test.class_names[int(y[j])] if test.class_names else str(int(y[j]))
    Image.fromarray(test.images[pick[j]].permute(1, 2, 0).numpy()).save(out / f"{tag}_true_{name}.png")
    print(f"{tag}: test image {int(pick[j])}, true class {name}")
EOF

# 2. CAM figures (with the baseline's map as "org" when given).
"$PY" -m ssal explain "$RUN" "$TMP/img" --out "$TMP/cams" ${BASELINE:+--baseline "$BASELINE"}
cp "$TMP"/cams/correct_*.png "$OUT/explain_correct.png"
cp "$TMP"/cams/wrong_*.png "$OUT/explain_wrong.png"

# 3. FGSM and BIM on f only, a seeded random subset of N test images.
for METHOD in fgsm bim; do
  "$PY" -m ssal attack "$RUN" --method "$METHOD" --eps 0,1/255,2/255,4/255,8/255 --steps 10 \
    --limit "$N" --out "$TMP/attack"
  cp "$TMP/attack/attack_$METHOD.png" "$OUT/attack_$METHOD.png"
  cp "$TMP/attack/attack_$METHOD.csv" "$OUT/attack_$METHOD.csv"
done

for f in "$OUT"/explain_*.png "$OUT"/attack_*.png; do
  size=$(wc -c <"$f")
  if [ "$size" -gt 300000 ]; then echo "warning: $f is $size bytes (> 300 KB)" >&2; fi
done
ls -l "$OUT"
