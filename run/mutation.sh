#!/usr/bin/env bash
# Mutation testing (mutmut) of the math against its tests, in a throw-away copy of HEAD (mutmut rewrites
# the sources it mutates). Prints mutmut's summary; `mutmut results`/`mutmut show NAME` in the printed
# folder list and explain the survivors.
# Usage: bash run/mutation.sh [PATH ...]   (default: fedml_heterofl/defense fedml_heterofl/attack)
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/setup.sh >/dev/null
.venv/bin/python -m pip install -q -c requirements.lock -e ".[mutation]" 2>&1 | grep -v -E "is ignored|^$" || true
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(fedml_heterofl/defense fedml_heterofl/attack)
work=$(mktemp -d /tmp/mutation.XXXXXX)
git archive HEAD | tar -x -C "$work"
{
    echo "[mutmut]"
    echo "paths_to_mutate = ${paths[0]}"
    for p in "${paths[@]:1}"; do echo "    $p"; done
    echo "tests_dir = tests/test_heterofl.py"
    for t in tests/test_baselines.py tests/test_defense_base.py tests/test_attacks.py tests/test_oracle.py; do
        echo "    $t"
    done
    printf 'also_copy = fedml_heterofl\n    tests\n    config\n'
} > "$work/setup.cfg"
echo "[mutation] working copy: $work"
cd "$work"
OMP_NUM_THREADS=1 FEDML_HETEROFL_QUIET=1 "$OLDPWD/.venv/bin/mutmut" run --max-children "${JOBS:-1}"
"$OLDPWD/.venv/bin/mutmut" results | grep -c survived | xargs echo "[mutation] survivors:"
