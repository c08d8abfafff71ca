#!/usr/bin/env bash
# One-shot GPU check: bash benchmarks/gpu_check.sh [--smoke] OUT_DIR
# Writes OUT_DIR/gpu_check.{json,md}; the logic is benchmarks/gpu_check.py; Python as in check_common.sh.
# Time: gpu_check.py plans everything within 470 s of this script's start and stops itself there
# (writing what it measured); `timeout` below is the last resort at 8 minutes.
# Without a GPU torch can use, the full check stops within seconds (exit 3) giving the driver and torch's reason.
set -euo pipefail
export BIGS_GPU_CHECK_T0=$(date +%s.%N)   # the budget counts from here (imports and CUDA start-up included)
source "$(dirname "${BASH_SOURCE[0]}")/check_common.sh"
exec timeout --kill-after=5 480 "$PYTHON" "$REPO/benchmarks/gpu_check.py" "$@"
