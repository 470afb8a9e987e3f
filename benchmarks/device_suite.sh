#!/usr/bin/env bash
# One command for a machine with one accelerator (one H200: within 8 minutes). What it runs and writes:
# benchmarks/device_suite.py. Usage, from anywhere:
#   benchmarks/device_suite.sh [--smoke] [--official_dir=DIR] [--torch_python=PY] [--out=FILE] [--budget_s=480]
#                              [--parts=kuda,hyena,equality,train_step] [--models=text_only,kuda,...]
# PYTHON selects the interpreter (default: the repo's .venv if present, else python3).
# Where that interpreter lacks this project's dependencies (the GPU machines' image has no ml_collections, grain or
# TFDS, and no package index), the wheels of .whl/ (benchmarks/device_wheels.sh) are installed into
# MMFUSE_DEVICE_SITE (default /tmp/mmfuse_site) and put first on PYTHONPATH, for the suite and its subprocesses.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
NEEDS="import ml_collections, grain, tensorflow_datasets, array_record, tensorboardX, flax, optax, orbax.checkpoint"
WHEELS="${MMFUSE_DEVICE_WHEELS:-.whl}"
if ! "$PYTHON" -c "$NEEDS" 2>/dev/null; then
  if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
    echo "$PYTHON lacks this project's dependencies and $WHEELS/ has no wheels: run benchmarks/device_wheels.sh" \
         "where there is a package index and carry .whl (benchmarks/README.md, 'Before a GPU session')" >&2
    exit 2
  fi
  SITE="${MMFUSE_DEVICE_SITE:-/tmp/mmfuse_site}"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c "$NEEDS"  # a wheel missing from the list fails here, before any part runs
  echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" >&2
fi
exec "$PYTHON" -m benchmarks.device_suite "$@"
