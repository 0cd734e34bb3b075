"""FedML's cross-silo MPI backend (``training_type: cross_silo``, ``backend: MPI``) that cannot hang.

Launch: ``mpirun -np W+1 python main.py --cf config.yaml`` (``--allow-run-as-root --oversubscribe``
as root or with more ranks than cores); rank 0 is FedML's server, ranks 1..W its clients ("silos").

FedML 0.9.6 pitfalls handled here:

* An exception in any rank leaves FedML's MPI receive threads running, and the other ranks wait for
  messages forever. :func:`abort_on_error` calls ``MPI.COMM_WORLD.Abort(1)``, which ends every rank of
  the job with a non-zero exit status. A rank killed by a signal is handled by ``mpirun`` itself (it
  aborts the job).
* The whole run happens inside ``FedMLRunner(...)`` and ``.run()``; ``.run()`` then writes
  ``~/.fedml/fedml_trace/<pid>``: :func:`run_cross_silo` keeps that under the run directory.
* Cross-silo asserts ``worker_num + 1 == world size``, addresses clients ``1..client_num_per_round``
  and, when ``client_num_in_total > client_num_per_round``, samples data silos itself (with
  ``np.random.seed(round)``) without telling the aggregator which. So FedML must see
  ``client_num_in_total == client_num_per_round == worker_num == world size - 1``
  (:func:`check_cross_silo_args`): one process per client for FedML's own trainers, or — the
  fedml_heterofl MPI backend — one silo per *worker process*, each training many clients:
  :class:`SiloView` gives FedML those counts while our trainer and aggregator read the run's own.

GPUs: :func:`rank_device` picks this rank's device from FedML's ``gpu_mapping.yaml``
(:func:`~fedml_heterofl.simulation.launch.gpu_mapping`).
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from fedml_heterofl.fedml_bridge.offline import fedml_home
from fedml_heterofl.simulation.launch import gpu_mapping

log = logging.getLogger(__name__)


@contextmanager
def abort_on_error(exit_code: int = 1) -> Iterator[None]:
    """Turn an exception in this MPI rank into ``MPI.COMM_WORLD.Abort(exit_code)`` (ends the whole job).

    ``SystemExit`` with status 0/None passes through (a normal exit).
    """
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        _abort(exit_code)
    except BaseException:  # noqa: B902 - any failure must end every rank
        _abort(exit_code)


def _abort(exit_code: int) -> None:
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    log.error("MPI rank %d failed; aborting the job", rank)
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(exit_code)


def check_cross_silo_args(args: Any, world_size: Optional[int] = None) -> None:
    """Raise ``ValueError`` naming the key unless ``args`` describe one cross-silo MPI process per FedML
    client (module doc; a :class:`SiloView` does)."""
    problems = []
    if getattr(args, "training_type", None) != "cross_silo":
        problems.append(f"training_type must be 'cross_silo', got {getattr(args, 'training_type', None)!r}")
    if getattr(args, "backend", None) != "MPI":
        problems.append(f"backend must be 'MPI', got {getattr(args, 'backend', None)!r}")
    if getattr(args, "scenario", "horizontal") != "horizontal":
        problems.append(f"scenario must be 'horizontal', got {args.scenario!r}")
    total, per_round = getattr(args, "client_num_in_total", None), getattr(args, "client_num_per_round", None)
    if total != per_round:
        problems.append(f"client_num_per_round ({per_round}) must equal client_num_in_total ({total}): "
                        "one MPI process per client")
    if world_size is not None and per_round is not None and world_size != per_round + 1:
        problems.append(f"the MPI job has {world_size} processes; client_num_per_round={per_round} needs "
                        f"{per_round + 1} (mpirun -np {per_round + 1})")
    if problems:
        raise ValueError("; ".join(problems))


class SiloView:
    """FedML's view of a run whose FedML clients are ``workers`` worker processes (module doc).

    ``client_num_in_total``, ``client_num_per_round`` and ``worker_num`` read ``workers``; every other
    attribute is read from and written to the run's ``args``, so what FedML sets (``rank``, ``comm``,
    ``round_idx``, ...) is what our trainer and aggregator, which keep the run's ``args``, read.
    """

    COUNTS = ("client_num_in_total", "client_num_per_round", "worker_num")

    def __init__(self, args: Any, workers: int) -> None:
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "counts", {key: workers for key in self.COUNTS})

    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes of the view
        counts = object.__getattribute__(self, "counts")
        if name in counts:
            return counts[name]
        return getattr(object.__getattribute__(self, "args"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.counts:
            self.counts[name] = value
        else:
            setattr(self.args, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.args, name)

    def __repr__(self) -> str:
        return f"SiloView({self.counts}, args={self.args!r})"


def rank_device(device_args: Any, rank: int) -> torch.device:
    """This rank's device: CPU; ``cuda:gpu_id``; or, with ``gpu_mapping_file``, the GPU the mapping gives
    process ``rank`` (``device_args``: :class:`~fedml_heterofl.settings.DeviceArgs`)."""
    if not device_args.using_gpu:
        return torch.device("cpu")
    gpu = device_args.gpu_id
    if device_args.gpu_mapping_file:
        gpu = gpu_mapping(device_args.gpu_mapping_file, device_args.gpu_mapping_key or "mapping_default")[rank][1]
    if not torch.cuda.is_available() or gpu >= torch.cuda.device_count():
        raise ValueError(f"device_args.using_gpu: rank {rank} needs cuda:{gpu}, but this machine has "
                         f"{torch.cuda.device_count()} CUDA devices; allowed here: using_gpu false")
    return torch.device(f"cuda:{gpu}")


def run_cross_silo(args: Any, device: Any, dataset: Sequence[Any], model: Any, *, client_trainer: Any = None,
                   server_aggregator: Any = None, run_dir: Union[str, os.PathLike]) -> None:
    """Run FedML's cross-silo MPI federation in this rank; any failure aborts the whole job.

    Args:
        args: FedML's ``args`` after :func:`fedml_heterofl.fedml_bridge.init` (which sets ``rank``,
            ``comm``, ``worker_num``, ``client_id_list``).
        device: ``fedml.device.get_device(args)`` or a ``torch.device``.
        dataset: FedML's 8-item list ``[train_num, test_num, train_global, test_global,
            train_local_num_dict, train_local_dict, test_local_dict, class_num]``.
        model: the model (each rank builds its own, identically seeded).
        client_trainer, server_aggregator: :class:`HeteroFLClientTrainer` (one client per rank) or
            :class:`HeteroFLWorkerTrainer` (several) on client ranks, :class:`HeteroFLServerAggregator` on
            rank 0 (either may be ``None`` on the other ranks).
        run_dir: the run directory (FedML's home folder goes under it).
    """
    with abort_on_error():
        from fedml import FedMLRunner
        from mpi4py import MPI

        check_cross_silo_args(args, MPI.COMM_WORLD.Get_size())
        with fedml_home(run_dir):
            FedMLRunner(args, device, dataset, model, client_trainer=client_trainer,
                        server_aggregator=server_aggregator).run()
