#!/usr/bin/env bash
# Rerun the first rounds of one committed run per grid under runs/ and compare them with its metrics.csv
# (`fedml-heterofl recheck`): the proof that a change that should change no number changed none.
# Usage: bash run/recheck.sh [ROUNDS] (default 5: the first test round of the grids that test every 5th)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} FEDML_HETEROFL_QUIET=1
cells=(
    "runs/breadth_mnist_lr/seed=0,defense=bulyan,attack=alie"
    "runs/calibrate_mnist_lr/lr=0.0005,seed=0"
    "runs/calibrate_shakespeare_rnn/lr=0.8"
    "runs/fraction_mnist_lr/seed=1,defense=heterofl,attackers=49%"
    "runs/gamma_init_mnist_lr/seed=0,perturbation=sign,gamma_init=0.001"
    "runs/oracle_mnist_lr/seed=0,defense=heterofl"
    "runs/table1_fashion_mnist_cnn/seed=0,defense=heterofl,attack=adaptive"
    "runs/table1_mnist_lr/seed=0,defense=heterofl,attack=adaptive"
    "runs/table1_mnist_lr_calibrated/seed=0,defense=heterofl,attack=min_max"
    "runs/table1_mnist_lr_calibrated/seed=0,defense=multikrum,attack=adaptive_deviation"
    "runs/table1_shakespeare_rnn/seed=0,defense=heterofl,attack=adaptive"
    "runs/trigger_share_fashion_mnist_cnn/samples=100,seed=0,defense=heterofl,attack=min_max"
)
.venv/bin/python -m fedml_heterofl recheck --rounds "$rounds" "${cells[@]}"
