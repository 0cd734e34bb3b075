#!/usr/bin/env bash
# One experiment on the standalone backend (comm_args.backend: single_process), resumable: run it
# again after a kill and it continues from the last finished round.
# Usage: bash run/standalone.sh [CONFIG] [extra `fedml-heterofl run` options, e.g. --fresh]
#        (default CONFIG: config/mnist_lr.yaml; results in the config's common_args.results_dir)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/mnist_lr.yaml}
shift || true
bash run/setup.sh >/dev/null
exec .venv/bin/fedml-heterofl run --cf "$config" "$@"
