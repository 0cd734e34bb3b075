#!/usr/bin/env bash
# One experiment on FedML's cross-silo MPI backend: the server and one process per sampled client,
# i.e. mpirun -np (client_num_per_round + 1), read from the config. A hostfile spreads the ranks over
# several machines (set device_args.using_gpu: true and gpu_mapping_file for GPU nodes); every node
# needs this project at the same path with run/setup.sh done.
# Usage: bash run/mpi.sh [CONFIG] [HOSTFILE]     (default CONFIG: config/mnist_lr_mpi.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/mnist_lr_mpi.yaml}
hostfile=${2:-}
bash run/setup.sh >/dev/null
np=$(.venv/bin/python -c "from fedml_heterofl.settings import load_settings as l; print(l('$config').train_args.client_num_per_round + 1)")
args=(--oversubscribe -np "$np")
[ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
[ -n "$hostfile" ] && args+=(--hostfile "$hostfile")
echo "[mpi] mpirun ${args[*]} fedml-heterofl run --cf $config"
exec mpirun "${args[@]}" .venv/bin/fedml-heterofl run --cf "$config" --no-progress
