#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Usage: bash run/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/setup.sh
export FEDML_HETEROFL_QUIET=1
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "[test] no tests ran: failing" >&2; exit 1; fi
exit "$rc"
