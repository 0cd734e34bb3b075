#!/usr/bin/env bash
# Client and server packages for FedML's platform, made by FedML's own `fedml build` from our entry
# point (run/fedml_entry.py), this package's source and one config (it becomes the packages'
# fedml_config.yaml). Works offline; uploading the packages needs a TensorOpera account.
# Usage: bash run/fedml_build.sh [CONFIG] [DEST]      (defaults: config/mnist_lr.yaml dist/fedml)
# Result: DEST/dist-packages/client-package.zip and server-package.zip
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/mnist_lr.yaml}
dest=${2:-dist/fedml}
fedml=${FEDML_BIN:-.venv/bin/fedml}
[ -f "$config" ] || { echo "fedml_build: config $config not found" >&2; exit 2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src" "$stage/config" "$dest"
cp -r fedml_heterofl run/fedml_entry.py "$stage/src/"
cp "$config" "$stage/config/fedml_config.yaml"
for type in client server; do
    "$fedml" build -t "$type" -sf "$stage/src" -ep fedml_entry.py -cf "$stage/config" -df "$dest" \
        -ig "__pycache__,*.pyc" >"$stage/build-$type.log" 2>&1 \
        || { cat "$stage/build-$type.log" >&2; exit 1; }
    zip="$dest/dist-packages/$type-package.zip"
    [ -f "$zip" ] || { cat "$stage/build-$type.log" >&2; echo "fedml_build: $zip was not made" >&2; exit 1; }
    echo "[fedml_build] $zip"
done
