#!/usr/bin/env bash
# GPU check of the label side (see bench/gpu_check.py, run as python -m bench.gpu_check): bash bench/gpu_check.sh [--dry-run]
# Uses .venv/bin/python when present, else python3; at most 10 minutes; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export TQDM_DISABLE=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 600 "$PY" -m bench.gpu_check "$@"
