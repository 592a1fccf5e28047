#!/usr/bin/env bash
# On one GPU in under 8 minutes: step time fp32/bf16, channels_last, compile; trials/hour at k = 1, 2, 4
# concurrent `layersearch train preset=gpu` processes on the same device. RANDOM weights (timing only).
#   bash benchmarks/gpu.sh           # on a machine with a CUDA device
#   bash benchmarks/gpu.sh --dry     # the same script at a toy CPU size (tests/test_benchmarks.py runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LS=${LAYERSEARCH:-$(dirname "$PY")/layersearch}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [[ "${1:-}" == "--dry" ]]; then
  echo "DRY RUN on the CPU at a toy size: the numbers mean nothing, the script is known to work."
  SIZE=(trainer.device=cpu trainer.steps=4 trainer.batch_size=2 trainer.eval_every=2 task.crop=32 task.val_crop=64
        model.channels=8 model.n_blocks=1)
  STEP_ARGS=(--steps 2 --warmup 1 --variant fp32 --variant bf16 --variant "bf16 + channels_last"
             --variant "bf16 + channels_last + compile")
elif [[ $# -gt 0 ]]; then
  echo "usage: bash benchmarks/gpu.sh [--dry]" >&2
  exit 2
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  SIZE=(trainer.device=cuda)
  STEP_ARGS=(--steps 100 --warmup 20)
fi
COMMON=(preset=gpu loss_net.weights=random metrics.lpips.weights=random trainer.progress=false)

echo
echo "== step time (preset=gpu, relu2_2 loss): precision, channels_last, compile"
"$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" "${COMMON[@]}" "${SIZE[@]}"

echo
echo "== trials per hour: k concurrent 'layersearch train preset=gpu' processes on the same device"
printf '%-3s %12s %14s %s\n' k "wall s" "trials/hour" "peak GPU memory used (MiB, nvidia-smi every 1 s)"
for k in 1 2 4; do
  monitor=""
  if [[ "${SIZE[0]}" == trainer.device=cuda ]] && command -v nvidia-smi >/dev/null; then
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; sleep 1; done) \
      >"$OUT/memory$k.txt" 2>/dev/null &
    monitor=$!
  fi
  start=$(date +%s.%N)
  pids=()
  for i in $(seq "$k"); do
    "$LS" train "${COMMON[@]}" "${SIZE[@]}" seed="$i" out_dir="$OUT/k$k-$i" >"$OUT/k$k-$i.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    if ! wait "$pid"; then
      echo "a trial failed (k=$k):" >&2
      cat "$OUT"/k"$k"-*.log >&2
      exit 1
    fi
  done
  end=$(date +%s.%N)
  memory="n/a"
  if [[ -n "$monitor" ]]; then
    kill "$monitor" 2>/dev/null || true
    memory=$(sort -n "$OUT/memory$k.txt" | tail -1)
  fi
  "$PY" -c "import sys; k, wall = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); \
print(f'{k:<3} {wall:>12.1f} {k * 3600 / wall:>14.0f} {sys.argv[4]}')" "$k" "$start" "$end" "$memory"
done
echo
echo "trials/hour = k * 3600 / wall time of k trials started together (process start-up included)."
echo "RANDOM weights: these runs time the training; their scores mean nothing."
