#!/usr/bin/env bash
# The first 15 minutes on a rented TPU VM: bash benchmarks/tpu_check.sh [--smoke] OUT_DIR
# Writes OUT_DIR/tpu_check.{json,md}; the logic is benchmarks/tpu_check.py. Python: $PYTHON, else the
# active virtualenv, else the repo's .venv, else python3 on PATH. --smoke: XLA:CPU with 2 devices.
set -euo pipefail
if [ $# -lt 1 ] || [ "${!#}" = "--smoke" ]; then
    echo "usage: bash benchmarks/tpu_check.sh [--smoke] OUT_DIR" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then :
elif [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
elif [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
if [ "$1" = "--smoke" ]; then
    export PJRT_DEVICE=CPU CPU_NUM_DEVICES=${CPU_NUM_DEVICES:-2}
else
    export PJRT_DEVICE=${PJRT_DEVICE:-TPU}
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "${!#}"
exec timeout --kill-after=10 1800 "$PYTHON" "$REPO/benchmarks/tpu_check.py" "$@"
