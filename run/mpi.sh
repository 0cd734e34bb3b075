#!/usr/bin/env bash
# One experiment on FedML's cross-silo MPI backend: a server and worker processes that train the round's
# clients between them. -np: $NP if set, else what the config's GPU mapping places (device_args.using_gpu),
# else 5 (a server and 4 workers; fewer when the config has fewer clients per round). Any -np from 2 to
# client_num_per_round + 1 works; each process costs about 1 GB (FedML's imports), see the README.
# A host file spreads the ranks over several machines; every node needs this project at the same path
# with run/setup.sh done.
# Usage: [NP=9] bash run/mpi.sh [CONFIG] [HOSTFILE]     (default CONFIG: config/mnist_lr_mpi.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/mnist_lr_mpi.yaml}
hostfile=${2:-}
bash run/setup.sh >/dev/null
np=${NP:-$(.venv/bin/python - "$config" <<'PY'
import sys
from fedml_heterofl.settings import load_settings
from fedml_heterofl.simulation.launch import gpu_mapping
s = load_settings(sys.argv[1])
d = s.device_args
if d.using_gpu and d.gpu_mapping_file:
    print(len(gpu_mapping(d.gpu_mapping_file, d.gpu_mapping_key or "mapping_default")))
else:
    print(min(5, s.train_args.client_num_per_round + 1))
PY
)}
args=(--oversubscribe -np "$np")
[ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
[ -n "$hostfile" ] && args+=(--hostfile "$hostfile")
echo "[mpi] mpirun ${args[*]} fedml-heterofl run --cf $config"
exec mpirun "${args[@]}" .venv/bin/fedml-heterofl run --cf "$config" --no-progress
