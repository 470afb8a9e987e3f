#!/usr/bin/env bash
# Download benchmarks/device_wheels.txt into .whl/ (git-ignored) for a GPU machine with no package index:
# wheels for CPython 3.12 on manylinux x86-64, whatever this machine's Python is (pip only downloads).
# promise 2.3 has no wheel on the index: its pure-Python wheel is built here from the source release.
# Then carry .whl in the device call; benchmarks/device_suite.sh installs it there (README, "Before a GPU session").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
mkdir -p .whl
mapfile -t PINS < <(grep -v -e '^#' -e '^$' benchmarks/device_wheels.txt | grep -v '^promise==')
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${PINS[@]}"
"$PY" -m pip wheel -q --no-deps -w .whl "$(grep '^promise==' benchmarks/device_wheels.txt)"
echo "$(ls .whl/*.whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1))"
