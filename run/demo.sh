#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, FedML, OpenMPI, real MNIST), then FedAvg and HeteroFL
# on MNIST/LR with 100 clients and 20 attackers, without attack and under Min-Max; prints the accuracy
# table and writes plots to results/demo/report/. Usage: bash run/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/setup.sh
.venv/bin/fedml-heterofl grid --cf config/grids/demo.yaml
.venv/bin/fedml-heterofl report results/demo
