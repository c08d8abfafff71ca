#!/usr/bin/env bash
# One-shot GPU check: bash benchmarks/gpu_check.sh [--smoke] OUT_DIR
# Writes OUT_DIR/gpu_check.{json,md}; the logic is benchmarks/gpu_check.py. Python: $PYTHON, else the
# active virtualenv, else the repo's .venv, else python3 on PATH.
# Time: gpu_check.py plans everything within 470 s of this script's start and stops itself there
# (writing what it measured); `timeout` below is the last resort at 8 minutes.
# Without a GPU torch can use, the full check stops within seconds (exit 3) giving the driver and torch's reason.
set -euo pipefail
export BIGS_GPU_CHECK_T0=$(date +%s.%N)   # the budget counts from here (imports and CUDA start-up included)
if [ $# -lt 1 ] || [ "${!#}" = "--smoke" ]; then
    echo "usage: bash benchmarks/gpu_check.sh [--smoke] OUT_DIR" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then :
elif [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
elif [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the repo's own bigs, whatever is installed
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1        # nothing is downloaded
mkdir -p "${!#}"
exec timeout --kill-after=5 480 "$PYTHON" "$REPO/benchmarks/gpu_check.py" "$@"
