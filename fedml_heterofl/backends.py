"""``fedml-heterofl run --cf config.yaml`` (also ``python -m fedml_heterofl --cf config.yaml``): the
backend that ``comm_args.backend`` names (:data:`BACKENDS`) runs the configuration.

``comm_args.backend: single_process`` runs the standalone simulator in this process
(:func:`~fedml_heterofl.simulation.runner.run_standalone`); ``backend: MPI`` (with
``training_type: cross_silo``) must be started under ``mpirun -np N``: rank 0 is FedML's server, ranks
1..N-1 are workers that train the round's clients between them
(:func:`~fedml_heterofl.fedml_bridge.mpi_backend.run_mpi`). Each is a
:class:`~fedml_heterofl.simulation.rounds.Backend`; a new one is a function of that shape added to
:data:`BACKENDS` (and to ``comm_args.backend``'s allowed values).
Everything is checked before any work — the configuration (an error names the key and the allowed
values), the MPI launch (before FedML is imported), the results folder, an existing checkpoint — and
a problem is one line on stderr (printed once, by rank 0 of an MPI job) with exit status 2. A
standalone run resumes after its last completed round when started again with the same settings;
``--fresh`` starts it over.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
from typing import Dict

from fedml_heterofl.messages import report_error
from fedml_heterofl.settings import SettingsError, check_dry_round, load_settings
from fedml_heterofl.simulation.rounds import Backend

#: ``comm_args.backend`` -> ``module:function`` of its :class:`~fedml_heterofl.simulation.rounds.Backend`
#: (imported when chosen: the MPI backend imports FedML, a few seconds and ~1 GB per process)
BACKENDS: Dict[str, str] = {
    "single_process": "fedml_heterofl.simulation.runner:run_standalone",
    "MPI": "fedml_heterofl.fedml_bridge.mpi_backend:run_mpi",
}

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cf", "--yaml_config_file", dest="cf", required=True, help="FedML-style YAML config")
    parser.add_argument("--results-dir", default=None, help="override common_args.results_dir")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete the files a run wrote in this run's folder (checkpoints, "
                             "metrics, log; nothing else) when it starts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from fedml_heterofl.data import DataError
    from fedml_heterofl.record.store import RunStore, StoreError
    from fedml_heterofl.simulation.rounds import run_name

    try:
        settings = load_settings(args.cf)
        if settings.comm_args.backend == "MPI":
            from fedml_heterofl.simulation.launch import check_launch, mpi_world

            check_launch(settings, *mpi_world())  # before FedML's imports cost every rank ~1 GB
            check_dry_round(settings)
            RunStore(args.results_dir or settings.common_args.results_dir, run_name(settings)).check_writable()
        summary = backend(settings.comm_args.backend)(settings, results_dir=args.results_dir, fresh=args.fresh,
                                                      progress=not args.no_progress)
    except (SettingsError, DataError, StoreError, ValueError) as exc:
        # every rank of an MPI job fails alike: one of them says why
        return report_error("run", exc) if _launcher_rank() == 0 else 2
    if summary is not None:
        print(f"{summary['dataset']}/{summary['model']} {summary['defense']} vs {summary['attack']}: "
              f"final accuracy {summary['final_acc']:.4f} (best {summary['best_acc']:.4f}) after "
              f"{summary['rounds']} rounds; mean removal success rate {summary['mean_removal_success_rate']:.3f}, "
              f"FPR {summary['mean_fpr']:.3f}")
    return 0


def backend(name: str) -> Backend:
    """The backend ``comm_args.backend`` names (:data:`BACKENDS`)."""
    module, _, function = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def _launcher_rank() -> int:
    """This process's rank as ``mpirun`` (Open MPI, MPICH/PMI, Slurm) announces it; 0 outside MPI."""
    for key in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0
