#!/usr/bin/env bash
# docs/figures/ from the runs committed under runs/: `fedml-heterofl report runs/<grid>` for each grid
# below, then the figures docs/results.md shows, copied under names that say where they come from.
# Usage: bash run/figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash run/setup.sh >/dev/null
# grid folder | figure that report writes there | name under docs/figures/
figures="
table1_mnist_lr_calibrated accuracy_mnist_lr_adaptive.png mnist_lr_calibrated_accuracy_adaptive.png
table1_mnist_lr_calibrated accuracy_mnist_lr_min_max.png mnist_lr_calibrated_accuracy_min_max.png
table1_mnist_lr_calibrated accuracy_mnist_lr_sign_flip.png mnist_lr_calibrated_accuracy_sign_flip.png
table1_mnist_lr_calibrated accuracy_mnist_lr_adaptive_deviation.png mnist_lr_calibrated_accuracy_adaptive_deviation.png
table1_mnist_lr_calibrated accuracy_mnist_lr_ipm.png mnist_lr_calibrated_accuracy_ipm.png
table1_mnist_lr_calibrated accuracy_mnist_lr_min_sum.png mnist_lr_calibrated_accuracy_min_sum.png
table1_mnist_lr_calibrated accuracy_mnist_lr_label_flip.png mnist_lr_calibrated_accuracy_label_flip.png
table1_mnist_lr_calibrated accuracy_mnist_lr_none.png mnist_lr_calibrated_accuracy_none.png
table1_mnist_lr_calibrated removal_mnist_lr_sign_flip.png mnist_lr_calibrated_removal_sign_flip.png
table1_mnist_lr_calibrated ablation_mnist_lr.png mnist_lr_calibrated_ablation.png
table1_mnist_lr accuracy_mnist_lr_min_max.png mnist_lr_converged_accuracy_min_max.png
gamma_init_mnist_lr accuracy_vs_gamma_init.png mnist_lr_calibrated_gamma_init.png
heterogeneity_mnist_lr accuracy_vs_heterogeneity.png mnist_lr_calibrated_heterogeneity.png
fraction_mnist_lr accuracy_vs_fraction.png mnist_lr_calibrated_fraction.png
lambda_mnist_lr accuracy_vs_lambda.png mnist_lr_calibrated_lambda.png
trigger_size_mnist_lr accuracy_vs_trigger_size.png mnist_lr_calibrated_trigger_size.png
breadth_mnist_lr accuracy_mnist_lr_ipm.png mnist_lr_breadth_accuracy_ipm.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_adaptive.png fashion_mnist_cnn_accuracy_adaptive.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_min_max.png fashion_mnist_cnn_accuracy_min_max.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_sign_flip.png fashion_mnist_cnn_accuracy_sign_flip.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_adaptive_deviation.png fashion_mnist_cnn_accuracy_adaptive_deviation.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_ipm.png fashion_mnist_cnn_accuracy_ipm.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_min_sum.png fashion_mnist_cnn_accuracy_min_sum.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_label_flip.png fashion_mnist_cnn_accuracy_label_flip.png
table1_fashion_mnist_cnn accuracy_fashion_mnist_cnn_none.png fashion_mnist_cnn_accuracy_none.png
table1_fashion_mnist_cnn ablation_fashion_mnist_cnn.png fashion_mnist_cnn_ablation.png
trigger_share_fashion_mnist_cnn trigger_share_fashion_mnist_cnn.png fashion_mnist_cnn_trigger_share.png
table1_shakespeare_rnn accuracy_shakespeare_rnn_adaptive.png shakespeare_rnn_accuracy_adaptive.png
table1_shakespeare_rnn accuracy_shakespeare_rnn_sign_flip.png shakespeare_rnn_accuracy_sign_flip.png
table1_shakespeare_rnn accuracy_shakespeare_rnn_min_max.png shakespeare_rnn_accuracy_min_max.png
table1_shakespeare_rnn accuracy_shakespeare_rnn_label_flip.png shakespeare_rnn_accuracy_label_flip.png
table1_shakespeare_rnn accuracy_shakespeare_rnn_none.png shakespeare_rnn_accuracy_none.png
"
# seeds a grid's figures read while its later seeds still run (as docs/results.md's tables: --seeds)
declare -A seeds=([table1_fashion_mnist_cnn]=0)
for grid in $(echo "$figures" | awk 'NF {print $1}' | sort -u); do
    FEDML_HETEROFL_QUIET=1 .venv/bin/fedml-heterofl report "runs/$grid" ${seeds[$grid]:+--seeds "${seeds[$grid]}"} >/dev/null
done
echo "$figures" | while read -r grid figure name; do
    [ -n "$grid" ] || continue
    cp "runs/$grid/report/$figure" "docs/figures/$name"
    echo "[figures] docs/figures/$name"
done
