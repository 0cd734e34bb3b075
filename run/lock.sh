#!/usr/bin/env bash
# Regenerate requirements.lock: every distribution run/setup.sh installs (the runtime and the test, mpi
# and plot extras), each pinned ==, resolved by pip-tools' pip-compile from setup.py's declared ranges
# and constraints.txt. Never edit the lock by hand. Existing pins are kept unless a declared range
# rules them out; `--upgrade` takes the newest versions the ranges allow, `--upgrade-package NAME`
# one distribution. Run the test suite after regenerating (bash run/test.sh installs the new lock).
# Usage: bash run/lock.sh [pip-compile options, e.g. --upgrade]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
tools=$(mktemp -d /tmp/fedml_heterofl_lock.XXXXXX)
trap 'rm -rf "$tools"' EXIT
"$PY" -m venv "$tools/venv"
# the resolver itself, at the version the lock was made with
"$tools/venv/bin/python" -m pip install -q pip==26.3 pip-tools==7.7.0 2>&1 | grep -v "is ignored" || true
"$tools/venv/bin/pip-compile" -q --extra test --extra mpi --extra plot -c constraints.txt \
    --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    --output-file requirements.lock "$@" setup.py >"$tools/log" 2>&1 || { cat "$tools/log" >&2; exit 1; }
echo "[lock] requirements.lock: $(grep -c '^[A-Za-z0-9]' requirements.lock) distributions pinned"
