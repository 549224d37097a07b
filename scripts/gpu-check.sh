#!/usr/bin/env bash
# The checks that need a GPU, in one run, for the moment a GPU machine is at hand (none is here): builds the
# CUDA leg (the venv's LibTorch 2.x with nvcc: volt's CUDA kernels and the NCCL process group), then runs
#   1. every test that needs CUDA or NCCL (they skip, saying so, without a GPU; here they must not skip):
#      init on CUDA, CUDA precisions, NCCL groups (device checks, one rank) and DDP / FSDP over NCCL (two GPUs);
#   2. the init, load and train benchmarks on cuda (JSON rows on stdout, as `volt bench` prints them).
# ALL=1 runs the whole ctest of the leg instead of step 1's selection.
#
#   scripts/gpu-check.sh 2>&1 | tee gpu-check.log
#   ALL=1 MODEL=gpt2 scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-gpt2-xl}
JOBS=${JOBS:-$(nproc)}
BUILD=build/lt2

command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: this machine has no NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
gpus=$(nvidia-smi --list-gpus | wc -l)
echo "gpu-check: $gpus GPU(s); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >&2
[[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null ||
  { echo "gpu-check: no nvcc (CUDA toolkit) for volt's CUDA kernels" >&2; exit 2; }

make deps
make build-2 JOBS="$JOBS"
grep -q "VOLT_WITH_CUDA 1" "$BUILD/generated/volt/config.h" ||
  { echo "gpu-check: $BUILD was configured without CUDA (see its CMake output)" >&2; exit 1; }

export VOLT_PYTHON=${VOLT_PYTHON:-$HOME/.cache/volt/venv/bin/python}
if [[ ${ALL:-0} == 1 ]]; then
  ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"
else
  # Tests named for a GPU, CUDA or NCCL; a skip here means the GPU was not seen, which is a failure.
  filter='*Cuda*:*CUDA*:*Gpu*:*GPU*:*Nccl*:*NCCL*'
  out=$(mktemp)
  "$BUILD/tests/volt_tests" --gtest_filter="$filter" 2>&1 | tee "$out"
  if grep -q "^\[  SKIPPED \]" "$out" && [[ $gpus -ge 2 ]]; then
    echo "gpu-check: tests skipped although $gpus GPUs are visible" >&2
    exit 1
  fi
  rm -f "$out"
fi

volt="$BUILD/bin/volt"
"$volt" bench init --model "$MODEL" --precision bf16-true --accelerator cuda
"$volt" bench load --model "$MODEL" --precision bf16-true
"$volt" bench train --accelerator cuda
echo "gpu-check: done" >&2
