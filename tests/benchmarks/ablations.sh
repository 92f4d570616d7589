#!/usr/bin/env bash
# Short ablations of the training recipe on this CPU: each run changes one thing against the
# current recipe with the same number of epochs (images seen, so that other load on the machine
# cannot change a run's share), seed, input size and data, and reports its EMA (or plain)
# weights' val mAP@0.5 on the first VAL_LIMIT val images. Prints a markdown table.
#   EPOCHS=2 SIZE=192 bash tests/benchmarks/ablations.sh
set -uo pipefail
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/VOCdevkit}
TRAIN_DATA=${TRAIN_DATA:-$DATA}  # a pack folder decodes faster
EPOCHS=${EPOCHS:-2}
SIZE=${SIZE:-192}
BATCH=${BATCH:-16}
VAL_LIMIT=${VAL_LIMIT:-300}
OUT=${OUT:-runs/ablations}
mkdir -p "$OUT"
declare -a NAMES=(
  "recipe" "recipe, seed 1" "stride 32 (no neck)" "one cell per object" "objectness target 1"
  "no EMA" "no mosaic" "weight decay 5e-4"
)
declare -a FLAGS=(
  "" "--seed 1" "--neck-channels 0" "--one-cell" "--binary-objectness"
  "--ema-decay 0" "--mosaic 0" "--weight-decay 5e-4"
)
for k in "${!NAMES[@]}"; do
  run="$OUT/run$k"
  # shellcheck disable=SC2086
  $PY -m model.train --data "$TRAIN_DATA" --val-data "$DATA" --out "$run" --input-size "$SIZE" --batch-size "$BATCH" \
    --epochs "$EPOCHS" --limit-val "$VAL_LIMIT" --workers 1 ${FLAGS[$k]} > "$run.log" 2>&1
  map=$(grep -o "final val mAP@0.5 [0-9.]*" "$run.log" | awk '{print $4}')
  seconds=$(awk '/^ +[0-9]+ /{n=$0} END{print n}' "$run.log" | awk '{print $NF}')
  echo "| ${NAMES[$k]} | \`${FLAGS[$k]:-(none)}\` | ${map:-failed} | ${seconds:-?} |" | tee -a "$OUT/table.md"
done
echo "| change | flags | val mAP@0.5 | train seconds |"
echo "|---|---|---|---|"
cat "$OUT/table.md"
