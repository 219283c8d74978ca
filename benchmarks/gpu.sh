#!/usr/bin/env bash
# The GPU benchmark in one call (benchmarks/gpu.py): installs the CUDA plugin wheels that match
# the pinned jax, caps the process at 4 GiB of GPU memory, and runs the measurements.
#
#   bash benchmarks/gpu.sh [--wheels DIR] [--platform gpu|cpu] [--quick] [gpu.py flags...]
#
# The GPU machine reaches no package index: fetch the wheels beforehand on a machine that does,
# into a folder carried with the working tree, e.g.
#   pip download -d .whl --only-binary=:all: "jax[cuda12]==$(grep '^jax==' requirements.txt | cut -d= -f3)"
# --platform cpu runs the same code on the CPU (the dry run the tests do; no cap, no wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
platform=gpu
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --platform) platform="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
jax_version=$(grep '^jax==' requirements.txt | cut -d= -f3)
if [ -n "$wheels" ]; then
  python -m pip install -q --no-index --find-links "$wheels" "jax[cuda12]==${jax_version}"
fi
if [ "$platform" = gpu ]; then
  total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
  # Preallocate exactly 4 GiB: the allocator then cannot grow past it (a hard cap).
  export XLA_PYTHON_CLIENT_PREALLOCATE=true
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python -c "print(f'{4096 / ${total_mib}:.4f}')")
  export JAX_PLATFORMS=cuda
else
  export JAX_PLATFORMS=cpu
fi
exec timeout 480 python -m benchmarks.gpu --platform "$platform" ${args[@]+"${args[@]}"}
