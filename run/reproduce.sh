#!/usr/bin/env bash
# Every grid behind docs/results.md, the most important first, then each results folder's report.
# Resumable: run it again after a kill and finished cells (here or committed under runs/) are skipped, an
# interrupted one resumes.
# Wall time per grid is appended to results/wall_times.txt.
# Usage: [JOBS=N] bash run/reproduce.sh [GRID ...]   (default: all grids below, in this order; JOBS cells
# at a time, default: the number of cores, each cell with cores/JOBS threads)
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/setup.sh >/dev/null
grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(calibrate_mnist_lr table1_mnist_lr_calibrated ablation_mnist_lr_calibrated
    table1_mnist_lr ablation_mnist_lr oracle_mnist_lr breadth_mnist_lr fraction_mnist_lr lambda_mnist_lr
    trigger_size_mnist_lr table1_fashion_mnist_cnn ablation_fashion_mnist_cnn trigger_share_fashion_mnist_cnn
    calibrate_shakespeare_rnn table1_shakespeare_rnn gamma_init_mnist_lr fraction_robust_mnist_lr
    heterogeneity_mnist_lr seeds_fashion_mnist_cnn deviation_mnist_lr_calibrated breadth_mnist_lr_calibrated
    deviation_fashion_mnist_cnn ipm_fashion_mnist_cnn)
mkdir -p results
for g in "${grids[@]}"; do
    start=$(date +%s)
    .venv/bin/fedml-heterofl grid --cf "config/grids/$g.yaml" --jobs "${JOBS:-$(nproc)}"
    echo "$g $(( $(date +%s) - start )) s $(nproc) cores jobs ${JOBS:-$(nproc)} $(date -u +%FT%TZ)" >> results/wall_times.txt
done
for g in "${grids[@]}"; do
    # the archive (runs/<grid>: every finished cell, also those of earlier days) where the grid has one
    dir=$(.venv/bin/python -c "import yaml; g = yaml.safe_load(open('config/grids/$g.yaml')); print(g.get('archive_dir') or g['results_dir'])")
    .venv/bin/fedml-heterofl report "$dir" >/dev/null
    echo "[reproduce] report: $dir/report/README.md"
done
