#!/usr/bin/env bash
# What one lent GPU should tell us, in one run from a fresh clone (README "Performance"; meant to take under
# 8 minutes on one modern GPU, the environment's creation included). RANDOM weights: timings, not scores.
#   1. the CUDA tests (pytest -m cuda tests/trial/test_cuda.py tests/lossnet/test_networks.py: every loss network);
#   2. step time of preset=gpu: fp32 vs bf16 vs channels_last, as ratios (benchmarks/train_step.py);
#   3. trials per hour with k = 1, 2, 4 `layersearch train preset=gpu` at once on the GPU (study.trials_per_device);
#   4. one command trial vs the same training in-process (benchmarks/command_overhead.py);
#   5. torch.compile's step time, last: if Inductor cannot build here, one line says so and nothing else is lost.
#
#   bash benchmarks/gpu.sh          # on a machine with a CUDA device
#   bash benchmarks/gpu.sh --dry    # the same script at a toy size on the CPU (tests/test_benchmarks.py runs it)
#
# The environment is the Makefile's own target, made by benchmarks/gpu_env.sh: PYTHON (default python3) makes
# the venv, and if it already has torch the venv uses that torch; PIP_ARGS="--no-index --find-links .whl"
# installs the rest from wheels on a machine without a package index.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -gt 1 || ( $# -eq 1 && "$1" != "--dry" ) ]]; then
  echo "usage: bash benchmarks/gpu.sh [--dry]" >&2
  exit 2
fi
DRY=$([[ "${1:-}" == "--dry" ]] && echo 1 || echo 0)
OUT=$(mktemp -d)
MONITOR=""
cleanup() {
  if [[ -n "$MONITOR" ]]; then kill "$MONITOR" 2>/dev/null || true; wait "$MONITOR" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
FAILED=()
STARTED=$(date +%s)
section() { echo; echo "== $* (at $(( $(date +%s) - STARTED )) s)"; }

section "environment: make .venv/.installed (benchmarks/gpu_env.sh)"
bash benchmarks/gpu_env.sh
PY=.venv/bin/python
LS=.venv/bin/layersearch
"$PY" -c "import platform, torch; print(f'python {platform.python_version()}, torch {torch.__version__}, ' \
f'CUDA {torch.version.cuda}, {torch.get_num_threads()} threads')"

COMMON=(preset=gpu loss_net.weights=random metrics.lpips.weights=random trainer.progress=false)
GPU_ID=""
if [[ $DRY == 1 ]]; then
  echo "DRY RUN on the CPU at a toy size: the numbers mean nothing, the script is known to work."
  SIZE=(trainer.device=cpu trainer.steps=4 trainer.batch_size=2 trainer.eval_every=2 task.crop=32 task.val_crop=64
        model.channels=8 model.n_blocks=1)
  STEP_ARGS=(--steps 2 --warmup 1)
  OVERHEAD_ARGS=(--device cpu --seconds 1 --repeats 1)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry')"
  # The GPU this process uses (cuda:0, which CUDA_VISIBLE_DEVICES may map to any card), by its UUID, so
  # that nvidia-smi reads that card and no other.
  GPU_ID=$("$PY" -c "import torch; u = str(torch.cuda.get_device_properties(0).uuid); \
print(u if u.startswith(('GPU-', 'MIG-')) else 'GPU-' + u)" 2>/dev/null || true)
  if ! nvidia-smi --id="$GPU_ID" --query-gpu=name >/dev/null 2>&1; then
    GPU_ID=$(echo "${CUDA_VISIBLE_DEVICES:-0}" | cut -d, -f1)
  fi
  nvidia-smi --id="$GPU_ID" --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader ||
    GPU_ID=""
  SIZE=(trainer.device=cuda)
  STEP_ARGS=(--steps 100 --warmup 20)
  OVERHEAD_ARGS=(--device cuda --batch-size 16 --crop 96 --size 256 --seconds 10 --repeats 2)
fi

section "CUDA tests: pytest -m cuda tests/trial/test_cuda.py tests/lossnet/test_networks.py"
if ! "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/trial/test_cuda.py tests/lossnet/test_networks.py 2>&1 | tail -25; then
  FAILED+=("CUDA tests")
fi

section "step time (preset=gpu, relu2_2 loss): precision and channels_last"
if ! "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" --variant fp32 --variant bf16 \
    --variant "fp32 + channels_last" --variant "bf16 + channels_last" "${COMMON[@]}" "${SIZE[@]}"; then
  FAILED+=("step time")
fi

section "trials per hour: k concurrent 'layersearch train preset=gpu' processes on the same device"
printf '%-3s %10s %12s %10s  %s\n' k "wall s" "trials/hour" "vs k=1" "peak GPU memory used, MiB (nvidia-smi, whole card)"
ONE=""
for k in 1 2 4; do
  if [[ -n "$GPU_ID" ]]; then
    nvidia-smi --id="$GPU_ID" --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$OUT/memory$k.txt" 2>/dev/null &
    MONITOR=$!
  fi
  start=$(date +%s.%N)
  pids=()
  for i in $(seq "$k"); do
    # What the launcher tells each worker of trials_per_device=k (data.on_device=auto's share of the card).
    LAYERSEARCH_TRIALS_PER_DEVICE=$k "$LS" train "${COMMON[@]}" "${SIZE[@]}" seed="$i" out_dir="$OUT/k$k-$i" \
      >"$OUT/k$k-$i.log" 2>&1 &
    pids+=($!)
  done
  ok=1
  for pid in "${pids[@]}"; do wait "$pid" || ok=0; done
  end=$(date +%s.%N)
  memory="n/a"
  if [[ -n "$MONITOR" ]]; then
    kill "$MONITOR" 2>/dev/null || true
    wait "$MONITOR" 2>/dev/null || true
    MONITOR=""
    memory=$(sort -n "$OUT/memory$k.txt" | tail -1)
  fi
  if [[ $ok == 0 ]]; then
    echo "$k   a trial failed; its output:"
    tail -5 "$OUT"/k"$k"-*.log
    FAILED+=("trials per hour, k=$k")
    continue
  fi
  wall=$("$PY" -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$end")
  ONE=${ONE:-$wall}
  "$PY" -c "import sys; k, wall, one = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); \
print(f'{k:<3} {wall:>10.1f} {k * 3600 / wall:>12.0f} {k * one / wall:>9.2f}x  {sys.argv[4]}')" \
    "$k" "$wall" "$ONE" "$memory"
done
echo "trials/hour = k * 3600 / wall time of k trials started together (process start-up included);"
echo "vs k=1 = throughput against one trial at a time, measured in this run."

section "one command trial vs the same training in-process (benchmarks/command_overhead.py)"
if ! "$PY" benchmarks/command_overhead.py "${OVERHEAD_ARGS[@]}"; then
  FAILED+=("command trial")
fi

section "torch.compile, last: step time against eager in the same run"
# A compiler that cannot build here (or a hang) must cost this section only: a time limit, one line if it fails.
if ! timeout 300 "$PY" benchmarks/train_step.py "${STEP_ARGS[@]}" --variant fp32 --variant "bf16 + channels_last" \
    --variant "bf16 + channels_last + compile" "${COMMON[@]}" "${SIZE[@]}" >"$OUT/compile.txt" 2>&1; then
  grep -E "^(step time|variant|fp32|bf16)" "$OUT/compile.txt" || true
  echo "torch.compile failed here (exit status, or 124 = over 300 s): $(grep -E 'Error|error' "$OUT/compile.txt" | tail -1 | cut -c1-300)"
else
  cat "$OUT/compile.txt"
fi

echo
echo "RANDOM weights: these runs time the training; their scores mean nothing. Took $(( $(date +%s) - STARTED )) s."
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "FAILED: ${FAILED[*]}" >&2
  exit 1
fi
