#!/usr/bin/env bash
# One-shot GPU check: bash benchmarks/gpu_check.sh [--smoke] OUT_DIR
# Writes OUT_DIR/gpu_check.{json,md}; the logic is benchmarks/gpu_check.py. Python: $PYTHON, else the
# active virtualenv, else the repo's .venv, else python3 on PATH.
set -euo pipefail
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
exec "$PYTHON" "$REPO/benchmarks/gpu_check.py" "$@"
