#!/usr/bin/env bash
# The GPU check in one command, for the day a CUDA machine is at hand (8-minute cap):
#   bash benchmarks/gpu_check.sh            # base sizes, bf16, on cuda
#   bash benchmarks/gpu_check.sh --quick    # tiny sizes on CPU (what tests/test_gpu_check.py runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
