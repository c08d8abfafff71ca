# Sourced by gpu_check.sh and tpu_check.sh with their arguments ([--smoke] OUT_DIR): checks them,
# picks Python ($PYTHON, else the active virtualenv, else the repo's .venv, else python3 on PATH),
# puts the repo's own bigs first on the path whatever is installed, keeps the hub offline (nothing is
# downloaded) and makes OUT_DIR. Sets REPO and PYTHON.
if [ $# -lt 1 ] || [ "${!#}" = "--smoke" ]; then
    echo "usage: bash benchmarks/$(basename "$0") [--smoke] OUT_DIR" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then :
elif [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
elif [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "${!#}"
