#!/usr/bin/env bash
# XLA lane: torch-xla 2.9.0 needs exactly torch 2.9.0, so it lives in its own venv (~7 GB).
# Runs tests/test_xla.py: the pretraining CLI with --device xla on PJRT_DEVICE=CPU, one and several devices,
# through Snakemake with the TPU overlay, and the TPU first-15-minutes check (--smoke) on XLA:CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-xla/bin/python ] || ! .venv-xla/bin/python -c "import torch_xla" 2>/dev/null; then
    python3 -m venv .venv-xla
    .venv-xla/bin/pip install -q --upgrade pip
    .venv-xla/bin/pip install -q torch==2.9.0 torch-xla==2.9.0
fi
.venv-xla/bin/pip install -q -e '.[test,workflow]'
export PJRT_DEVICE=CPU TF_CPP_MIN_LOG_LEVEL=2
.venv-xla/bin/python -m pytest -q -m xla tests/test_xla.py
