"""``fedml-heterofl run --cf config.yaml`` (also ``python -m fedml_heterofl --cf config.yaml``).

``comm_args.backend: single_process`` runs the standalone simulator in this process;
``backend: MPI`` (with ``training_type: cross_silo``) must be started under ``mpirun -np N+1``: rank 0
is FedML's server, rank r trains client r - 1 (:mod:`fedml_heterofl.simulation.mpi_backend`).
Everything is checked before any work — the configuration (an error names the key and the allowed
values), the results folder, an existing checkpoint, the MPI launch — and a problem is one line on
stderr with exit status 2. A standalone run resumes after its last completed round when started
again with the same settings; ``--fresh`` starts it over.
"""
from __future__ import annotations

import argparse
import logging
import os

from fedml_heterofl.cli import report_error
from fedml_heterofl.settings import Settings, SettingsError, check_dry_round, load_settings

log = logging.getLogger(__name__)

#: environment variables in which an MPI launcher gives each process the job's size (Open MPI's
#: mpirun; MPICH's and Intel MPI's mpiexec and Slurm's srun through PMI)
MPI_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cf", "--yaml_config_file", dest="cf", required=True, help="FedML-style YAML config")
    parser.add_argument("--results-dir", default=None, help="override common_args.results_dir")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: discard this run's folder (checkpoints, metrics, log) when it starts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_mpi_launch(settings: Settings, config_path: str) -> None:
    """:class:`SettingsError` unless this process is one of several started by an MPI launcher
    (:data:`MPI_SIZE_VARIABLES`): ``backend: MPI`` started as a plain command would abort in FedML."""
    size = next((os.environ[v] for v in MPI_SIZE_VARIABLES if v in os.environ), None)
    if size is None or not size.isdigit() or int(size) < 2:
        where = "was not started by mpirun" if size is None else f"is the only process of its MPI job (size {size})"
        raise SettingsError(
            f"comm_args.backend: 'MPI' runs the server and its clients as MPI processes, but this process {where}; "
            f"start it with `mpirun -np {settings.train_args.client_num_per_round + 1} fedml-heterofl run --cf "
            f"{config_path}`, or use backend: single_process")


def main(args: argparse.Namespace) -> int:
    from fedml_heterofl.data import DataError
    from fedml_heterofl.experiments.store import RunStore, StoreError
    from fedml_heterofl.simulation.runner import run_name

    try:
        settings = load_settings(args.cf)
        if settings.comm_args.backend == "MPI":
            check_mpi_launch(settings, args.cf)
            check_dry_round(settings)
            RunStore(args.results_dir or settings.common_args.results_dir, run_name(settings)).check_writable()
            from fedml_heterofl.simulation.mpi_backend import run_mpi

            summary = run_mpi(settings, results_dir=args.results_dir)
        else:
            from fedml_heterofl.simulation.runner import Simulation

            summary = Simulation(settings, results_dir=args.results_dir, fresh=args.fresh).run(
                progress=not args.no_progress)
    except (SettingsError, DataError, StoreError, ValueError) as exc:
        return report_error("run", exc)
    if summary is not None:
        print(f"{summary['dataset']}/{summary['model']} {summary['defense']} vs {summary['attack']}: "
              f"final accuracy {summary['final_acc']:.4f} (best {summary['best_acc']:.4f}) after "
              f"{summary['rounds']} rounds; mean removal success rate {summary['mean_removal_success_rate']:.3f}, "
              f"FPR {summary['mean_fpr']:.3f}")
    return 0
