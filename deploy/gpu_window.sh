#!/usr/bin/env bash
# One call of a GPU window (docs/gpu-window.md): check the pack, measure training
# throughput, train on a wall-clock budget, export the EMA weights in parts under $OUT, then the
# GPU serving checks (CUDA tests, the service benchmark with and without device decode).
# Every step prints; a failing step does not stop the ones after it, but the training comes first.
# Rehearsed end to end on the CPU by tests/model/test_gpu_window.py with a tiny pack.
set -uo pipefail
PY=${PYTHON:-python3}
PACK=${PACK:-.device-carry/pack}  # one pack folder, or several separated by spaces
WHEELS=${WHEELS:-.device-carry/whl}
OUT=${OUT:-runs/window}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-416}
BATCH=${BATCH:-128}
LR=${LR:-2e-3}
BUDGET=${BUDGET:-300}
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_BATCH=${BENCH_BATCH:-256}
TRAIN=${TRAIN:-1}
SERVE=${SERVE:-1}
SERVED=${SERVED:-}  # a weights folder to serve instead of the one this call trains
INIT_FROM=${INIT_FROM:-}  # an exported weights folder to continue from (model.train --init-from)
SCALES=${SCALES:-}  # MIN,MAX: multi-scale training (model.train --multi-scale)
STRIDE8=${STRIDE8:-0}  # 1: train with the stride-8 level (model.train --stride8-level)
COMPILE=${COMPILE:-off}  # model.train --compile: off, default, reduce-overhead (eager if it fails)
BENCH_COMPILE=${BENCH_COMPILE:-off}  # the training-step benchmark under these --compile modes
FRONTS=${FRONTS:-}  # also benchmark the service as python -m app --fronts N (engine + N fronts)
JPEGS=${JPEGS:-}  # a folder of JPEGs for the service benchmark (default: 200 from the pack)
SERVE_TIMEOUT=${SERVE_TIMEOUT:-90}
WORK=${WORK:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
step() { echo; echo "== $* ($(date +%T))"; }

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  step "install the service's wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
    && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
step "environment"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
DATA_ARGS=()
for pack in $PACK; do DATA_ARGS+=(--data "$pack"); done
FIRST_PACK=${PACK%% *}
if [ "$TRAIN" = 1 ] || [ -z "$JPEGS" ]; then
  step "pack check"
  for pack in $PACK; do $PY -m model.pack check "$pack" || exit 1; done
fi

step "training throughput"
LEVELS=()
[ "$STRIDE8" = 1 ] && LEVELS+=(--stride8-level)
# shellcheck disable=SC2086  # BENCH_COMPILE is a list of modes
$PY tests/benchmarks/bench_train.py --device "$DEVICE" --size "$SIZE" --batch "$BENCH_BATCH" --seconds "$BENCH_SECONDS" \
  --compile $BENCH_COMPILE "${LEVELS[@]}" 2>&1 | grep -v "^W[0-9]" | tee "$OUT/bench_train.txt"

if [ "$TRAIN" = 1 ]; then
step "train for $BUDGET s"
CONTINUE=()
[ -n "$INIT_FROM" ] && CONTINUE+=(--init-from "$INIT_FROM")
[ -n "$SCALES" ] && CONTINUE+=(--multi-scale "$SCALES")
[ "$STRIDE8" = 1 ] && CONTINUE+=(--stride8-level)
CONTINUE+=(--compile "$COMPILE")
timeout -s TERM $((BUDGET + 150)) $PY -m model.train "${DATA_ARGS[@]}" --val-split '' --out "$WORK/run" \
  --device "$DEVICE" --input-size "$SIZE" --batch-size "$BATCH" --lr "$LR" --time-budget "$BUDGET" \
  --export "$OUT/weights" --export-part-mib 15 "${CONTINUE[@]}" ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log" \
  | awk '!/^ +[0-9]+ / || $1 % 10 == 1'  # every tenth epoch line on the console, all in train.log
[ -f "$OUT/weights/model.json" ] || { echo "no weights exported"; exit 1; }
fi
[ "$SERVE" = 1 ] || exit 0

step "GPU serving checks"
if [ -z "$SERVED" ]; then
  SERVED="$WORK/served"
  cp -r "$OUT/weights" "$SERVED" && $PY -m model.checkpoint join "$SERVED"
fi
$PY -m pytest -q -p no:cacheprovider tests/model/test_gpu.py tests/app/test_device_decode.py 2>&1 | tail -15
if [ -z "$JPEGS" ]; then
  JPEGS="$WORK/jpegs"
  $PY - "$FIRST_PACK" "$JPEGS" <<'PYEOF'
import sys
from pathlib import Path
from model.data.pack import read_pack
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for item in read_pack(sys.argv[1])[:200]:
    (out / f"{item.image_id}.jpg").write_bytes(item.jpeg.numpy().tobytes())
PYEOF
fi
for decode in false true; do
  step "service benchmark, DETECTOR_DEVICE_DECODE=$decode"
  timeout -s INT "$SERVE_TIMEOUT" $PY tests/benchmarks/bench_service.py --weights "$SERVED" --device "$DEVICE" \
    --jpegs "$JPEGS" --concurrency 16 64 256 --requests 1500 --soak 0 --env DETECTOR_DEVICE_DECODE=$decode 2>&1 \
    | tee "$OUT/bench_service_decode_$decode.txt"
done
if [ -n "$FRONTS" ]; then
  step "service benchmark, $FRONTS fronts and one engine"
  timeout -s INT "$SERVE_TIMEOUT" $PY tests/benchmarks/bench_service.py --weights "$SERVED" --device "$DEVICE" \
    --jpegs "$JPEGS" --concurrency 16 64 256 --requests 1500 --soak 0 --fronts "$FRONTS" 2>&1 \
    | tee "$OUT/bench_service_fronts.txt"
fi
step "summary"
cat "$OUT/bench_train.txt" 2>/dev/null
for decode in false true; do
  echo "service, DETECTOR_DEVICE_DECODE=$decode:"
  grep -E "^\| [0-9]+ \||^bare network" "$OUT/bench_service_decode_$decode.txt" 2>/dev/null
done
if [ -n "$FRONTS" ]; then
  echo "service, $FRONTS fronts:"
  grep -E "^\| [0-9]+ \||^bare network|^service RSS" "$OUT/bench_service_fronts.txt" 2>/dev/null
fi
step "done"
