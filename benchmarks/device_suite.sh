#!/usr/bin/env bash
# One command for a machine with one accelerator (one H200: within 8 minutes). What it runs and writes:
# benchmarks/device_suite.py. Usage, from anywhere:
#   benchmarks/device_suite.sh [--smoke] [--official_dir=DIR] [--torch_python=PY] [--out=FILE] [--budget_s=480]
# PYTHON selects the interpreter (default: the repo's .venv if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m benchmarks.device_suite "$@"
