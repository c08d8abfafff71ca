#!/usr/bin/env bash
# The first 15 minutes on a rented TPU VM: bash benchmarks/tpu_check.sh [--smoke] OUT_DIR
# Writes OUT_DIR/tpu_check.{json,md}; the logic is benchmarks/tpu_check.py; Python as in check_common.sh.
# --smoke: XLA:CPU with 2 devices.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/check_common.sh"
if [ "$1" = "--smoke" ]; then
    export PJRT_DEVICE=CPU CPU_NUM_DEVICES=${CPU_NUM_DEVICES:-2}
else
    export PJRT_DEVICE=${PJRT_DEVICE:-TPU}
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec timeout --kill-after=10 1800 "$PYTHON" "$REPO/benchmarks/tpu_check.py" "$@"
