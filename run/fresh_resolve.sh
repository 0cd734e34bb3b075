#!/usr/bin/env bash
# Does a fresh install still work without the lock? For maintainers (not part of the test run): builds a
# throw-away venv from setup.py's declared ranges and constraints.txt only — what a user who installs
# the package into their own environment gets today — then lists every distribution whose version there
# differs from requirements.lock (newer releases), runs the set-up's import check and the smoke tests.
# Exit 0: the fresh resolve works (re-lock with `bash run/lock.sh --upgrade` when you want its versions);
# 1: it breaks, and the lines above say where — cap the culprit in setup.py before users meet it.
# Usage: bash run/fresh_resolve.sh [pytest args]   (default: the smoke tests below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
work=$(mktemp -d /tmp/fedml_heterofl_fresh.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
py="$work/venv/bin/python"
echo "[fresh] resolving setup.py's ranges without requirements.lock (a few minutes)"
"$py" -m pip install -q pip==26.3 2>&1 | grep -v "is ignored" || true
"$py" -m pip install -q -c constraints.txt ".[test,mpi,plot]" >"$work/pip.log" 2>&1 \
    || { grep -v "is ignored" "$work/pip.log" >&2; echo "[fresh] broken: pip could not install the declared ranges" >&2; exit 1; }
"$py" - <<'PY'
from pathlib import Path
from fedml_heterofl import environment as e
diff = e.lock_differences(e.read_lock(Path("requirements.lock").read_text()), e.installed())
print(f"[fresh] differs from requirements.lock: {', '.join(diff)}" if diff
      else "[fresh] every locked distribution resolves to its locked version")
PY
ok=0
"$py" -m pip check >/dev/null || { echo "[fresh] broken: pip check: $("$py" -m pip check | tr '\n' ' ')" >&2; ok=1; }
mpi=(); command -v mpirun >/dev/null 2>&1 && mpi=(--mpi)
# the import check (no --lock: the versions are meant to differ) from outside the source tree, so the
# installed package is the one imported
(cd "$work" && "$py" -m fedml_heterofl.environment --check "${mpi[@]}") || ok=1
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_simulation.py::test_standalone_end_to_end_and_deterministic
    tests/test_simulation.py::test_grid_and_report_smoke tests/test_heterofl.py tests/test_fedml_bridge.py
    tests/test_mpi_backend.py)
FEDML_HETEROFL_QUIET=1 "$py" -m pytest -q -x -p no:cacheprovider "${tests[@]}" || ok=1
[ "$ok" = 0 ] && echo "[fresh] ok: a fresh resolve installs, imports and passes the smoke tests" \
    || echo "[fresh] broken: see above" >&2
exit "$ok"
