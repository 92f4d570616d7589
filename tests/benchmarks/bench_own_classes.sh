#!/usr/bin/env bash
# Own classes on a CPU: fine-tuning from the shipped weights against training from scratch, the same
# wall-clock budget each, run side by side (one thread each, so both see the same machine), with
# val AP@0.5 after 5, 10 and 15 minutes of training (validation time is not counted).
#   tests/benchmarks/bench_own_classes.sh DATASET [MINUTES] [OUT]
# DATASET: any format model.train reads (docs/own-classes.md); its val split (or the fixed-seed
# --split-fraction 0.2 split of a dataset without one) is what AP is measured on.
set -euo pipefail
DATA=${1:?usage: bench_own_classes.sh DATASET [MINUTES] [OUT]}
MINUTES=${2:-15}
OUT=${3:-runs/own-classes}
PY=${PY:-.venv/bin/python}
marks=$(seq -s, 5 5 $((MINUTES - 1)) 2>/dev/null || true)
common=(--data "$DATA" --time-budget $((MINUTES * 60)) --input-size 320 --batch-size 16 ${marks:+--eval-at "$marks"})
mkdir -p "$OUT"
OMP_NUM_THREADS=1 $PY -m model.train "${common[@]}" --init-from weights --out "$OUT/fine-tune" \
  --export "$OUT/fine-tune/export" >"$OUT/fine-tune.log" 2>&1 &
OMP_NUM_THREADS=1 $PY -m model.train "${common[@]}" --out "$OUT/scratch" \
  --export "$OUT/scratch/export" >"$OUT/scratch.log" 2>&1 &
wait
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'start':<12} {'minutes':>8} {'val AP@0.5':>11} {'epochs':>7}")
for name in ("fine-tune", "scratch"):
    card = json.loads((out / name / "export" / "model.json").read_text())["card"]
    rows = [(e["seconds"], e["map50"], "") for e in card["val_during_training"]]
    rows.append((card["training_seconds"], card["val"]["map50"], card["epochs"]))
    for seconds, ap, epochs in rows:  # the last row: the exported weights, through the serving path
        print(f"{name:<12} {seconds / 60:>8.1f} {ap:>11.4f} {epochs:>7}")
PY
