#!/usr/bin/env bash
# One prepared run of `pspnet bench` on a lent GPU (the device tool: about 15 minutes in all, start-up included).
#
# On the device machine, from the repository root (its python3 holds PyTorch with CUDA and pspnet's dependencies):
#     bash benchmarks/gpu_bench.sh                 # writes $OUT/*.json and $OUT/gpu_bench.log
# Rehearsal on a CPU machine (tiny model and sizes, same commands and files), before spending device time:
#     GPU_BENCH_REHEARSAL=1 PYTHON=.venv/bin/python OUT=/tmp/gpu_bench bash benchmarks/gpu_bench.sh
#
# What it measures (each part bounded by `timeout`, so a slow part cannot eat the rest):
#   1. ceiling and eval forward in bf16 (BatchNorm folded, channels_last), batch 8 at 713x713, with the share of the
#      GPU's measured bf16 convolution ceiling;
#   2. the training step in bf16 autocast + channels_last at 713x713, batch 8 (the paper's ADE20K/Cityscapes crop)
#      and at 512x1024, batch 8, with torch.cuda.max_memory_allocated;
#   3. the same 713x713 step in fp16 with loss scaling (GradScaler), and through torch.compile;
#   4. the fp32 forward and the official multi-scale + flip protocol on one 512x683 photo.
# docs/benchmarks.md keeps what it printed, with the date and the GPU's name.
set -uo pipefail

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_bench}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
LOG="$OUT/gpu_bench.log"

if [[ -n "${GPU_BENCH_REHEARSAL:-}" ]]; then
  DEVICE=cpu; ARCH=(--arch pspnet18 --classes 11); BIG=(65 65); WIDE=(49 97); PHOTO=(97 129); BATCH=1; PART_LIMIT=300
  FP16=(--precision fp32)  # fp16 needs CUDA; the rehearsal runs the same command shape in fp32
else
  DEVICE=cuda; ARCH=(--arch pspnet50 --classes 150); BIG=(713 713); WIDE=(512 1024); PHOTO=(512 683); BATCH=8; PART_LIMIT=110
  FP16=(--precision fp16)
fi

part() {  # part NAME ARGS...: one `pspnet bench` run, its table in the log and its JSON in $OUT/NAME.json
  local name=$1; shift
  echo "=== $name: pspnet bench --device $DEVICE ${ARCH[*]} $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"
  timeout "$PART_LIMIT" "$PY" -m pspnet.cli bench --device "$DEVICE" "${ARCH[@]}" --repeat 3 "$@" \
    --json "$OUT/$name.json" >>"$LOG" 2>&1
  echo "=== $name: exit $?" | tee -a "$LOG"
}

{ echo "gpu_bench $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  2>/dev/null || echo "no nvidia-smi"; "$PY" -c "import torch; print('torch', torch.__version__)"; } >>"$LOG" 2>&1

part bf16_713 --what ceiling,forward,train --precision bf16 --size "${BIG[@]}" --batch "$BATCH" \
  --train-size "${BIG[@]}" --train-batch "$BATCH" --train-channels-last
part bf16_512x1024 --what train --precision bf16 --train-size "${WIDE[@]}" --train-batch "$BATCH" --train-channels-last
part fp16_713 --what train "${FP16[@]}" --train-size "${BIG[@]}" --train-batch "$BATCH" --train-channels-last
part compile_713 --what train --precision bf16 --train-size "${BIG[@]}" --train-batch "$BATCH" --train-channels-last \
  --train-compile
part fp32_protocol --what forward,protocol --precision fp32 --size "${PHOTO[@]}"
cat "$LOG"
