"""The MPI backend of ``fedml-heterofl run`` (``comm_args.backend: MPI``, ``training_type: cross_silo``):
FedML's cross-silo lifecycle with one server rank and any number of worker ranks.

    mpirun -np W+1 fedml-heterofl run --cf config/mnist_lr_mpi.yaml      # 1 <= W <= client_num_per_round

Roles (FedML's silos are the W workers, :class:`~fedml_heterofl.fedml_bridge.mpi.SiloView`):

* rank 0, the server: :class:`~fedml_heterofl.fedml_bridge.aggregator.HeteroFLServerAggregator` with
  the model, the test set, HeteroFL's trigger set and FLTrust's/Zeno's server data; it holds no client
  data. It writes the run folder: ``config.yaml``, ``partition.json``, ``metrics.csv`` and
  ``summary.json``, with the standalone simulator's columns and test schedule.
* ranks 1..W, the workers: in round t, worker r trains the clients
  ``assign_clients(participants(settings, t), sample_counts, W)[r - 1]`` — a pure function of seed,
  round and W, computed by every worker for itself; the server checks that the workers' clients are
  exactly the round's — reading only those clients' rows
  (:class:`~fedml_heterofl.fedml_bridge.trainer.HeteroFLWorkerTrainer`), and sends their stacked
  updates with their ids as one FedML message.

Every rank computes the same :func:`~fedml_heterofl.simulation.workload.client_plan` (partition,
attackers, trigger set) from the labels alone, and the same initial model. The training rows come from
a memory-mapped copy of the dataset (:class:`~fedml_heterofl.data.cache.DatasetCache`), written once per
machine, by its first rank, while the others wait. Threads: without ``OMP_NUM_THREADS`` each rank uses
its machine's cores divided by its ranks on that machine.

Same numbers as the standalone simulator: the same sampled clients, seeds, attackers, server round
and test schedule; the updates differ only in floating-point rounding (a vectorised pass over another
set of clients). BatchNorm models are the exception: standalone training carries running statistics
from one client to the next, here every client starts from the global ones and the server averages the
kept clients' statistics.

Launch checks (:func:`~fedml_heterofl.simulation.launch.check_launch`, run by ``fedml-heterofl run``
before FedML is even imported, and again here): a job with the wrong number of processes, or one
started without ``mpirun``, ends with one line from rank 0 naming the allowed ``-np``, and exit status
2 on every rank. Then rank 0 takes the run folder's lock and the first rank of each machine verifies
the data there; another run holding the folder, or changed data, is one line from rank 0 as well.
A rank that fails later ends the whole job (:func:`~.mpi.abort_on_error`).
FedML's MPI job cannot resume a killed run (FedML has no checkpoint hook).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, TensorDataset

from fedml_heterofl.data import DataError, verify_installed
from fedml_heterofl.data.cache import DatasetCache
from fedml_heterofl.fedml_bridge.aggregator import HeteroFLServerAggregator
from fedml_heterofl.fedml_bridge.args import fedml_args
from fedml_heterofl.fedml_bridge.mpi import SiloView, abort_on_error, rank_device, run_cross_silo
from fedml_heterofl.fedml_bridge.offline import init
from fedml_heterofl.fedml_bridge.trainer import HeteroFLWorkerTrainer
from fedml_heterofl.record.store import RunStore, StoreError
from fedml_heterofl.settings import Settings
from fedml_heterofl.simulation.clients import assign_clients, vectorised
from fedml_heterofl.simulation.launch import check_launch
from fedml_heterofl.simulation.rounds import participants, run_name, summarise, write_partition
from fedml_heterofl.simulation.workload import attackers_data, client_plan, initial_model, server_data


def run_mpi(settings: Settings, *, results_dir: Optional[str] = None, fresh: bool = False,
            progress: bool = True) -> Optional[Dict[str, Any]]:
    """The MPI backend (:class:`~fedml_heterofl.simulation.rounds.Backend`): run this MPI rank's part
    (module doc); rank 0 returns the run's summary, workers ``None``. Rank 0 holds the run folder's lock
    (:meth:`~fedml_heterofl.record.store.RunStore.lock`) for the run and, with ``fresh``, first
    deletes the files an earlier run wrote there; the first rank of each machine verifies the data there
    (:func:`~fedml_heterofl.data.verify_installed`). ``progress`` has no effect: FedML's server logs
    each round itself.

    Raises ``ValueError``, :class:`StoreError` or :class:`DataError` (rank 0) or ``SystemExit(2)``
    (other ranks) when the launch is wrong (:func:`~fedml_heterofl.simulation.launch.check_launch`),
    another run holds the folder or the data is not the installed data.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    check_launch(settings, rank, world)
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    data_args = settings.data_args
    store_root = Path(results_dir or settings.common_args.results_dir)
    with contextlib.ExitStack() as held:
        def start() -> None:
            if rank == 0:
                store = RunStore(store_root, run_name(settings))
                held.enter_context(store.lock())
                if fresh:
                    store.clear()
            if node.Get_rank() == 0:
                verify_installed(data_args.dataset, data_args.data_cache_dir)

        _on_every_rank(comm, start)
        with abort_on_error():
            if "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // node.Get_size()))
            cache = DatasetCache(data_args.dataset, data_args.data_cache_dir, **data_args.load_options())
            if node.Get_rank() == 0:
                cache.build()
            comm.Barrier()
            node.Free()
            return _run_rank(settings, cache, rank, world - 1, store_root)


def _on_every_rank(comm: Any, step: Callable[[], None]) -> None:
    """Run ``step`` on every rank; when it fails on any with :class:`StoreError` or :class:`DataError`,
    rank 0 raises the first failure (one line for the run command) and the others exit with status 2,
    as :func:`~fedml_heterofl.simulation.launch.check_launch` does."""
    try:
        step()
        mine = None
    except (StoreError, DataError) as exc:
        mine = (type(exc), str(exc))
    except BaseException as exc:  # anything else ends the whole job, as a failure later does
        with abort_on_error():
            raise exc
    first = next((problem for problem in comm.allgather(mine) if problem is not None), None)
    if first is None:
        return
    if comm.Get_rank() == 0:
        raise first[0](first[1])
    raise SystemExit(2)


def _run_rank(settings: Settings, cache: DatasetCache, rank: int, workers: int, store_root: Path
              ) -> Optional[Dict[str, Any]]:
    data = cache.dataset()
    plan = client_plan(settings, data)
    device = rank_device(settings.device_args, rank)
    model = initial_model(settings, data.num_classes).to(device)
    name = run_name(settings)
    run_dir = store_root / name
    args = fedml_args(settings)
    view = init(SiloView(args, workers), run_dir)  # FedML sees W clients; args keep the run's own counts
    outputs = data.num_classes + (plan.trigger_set is not None)
    silos = range(workers) if rank == 0 else [rank - 1]
    # FedML's 8-item dataset: the server's test set; no client data (workers read their clients' rows)
    test = DataLoader(TensorDataset(data.test_x, data.test_y), batch_size=settings.train_args.batch_size)
    dataset: List[Any] = [len(data.train_y), len(data.test_y), None, test, {j: 0 for j in silos},
                          {j: None for j in silos}, {j: None for j in silos}, outputs]
    if rank != 0:
        counts = plan.sample_counts
        trainer = HeteroFLWorkerTrainer(
            model, args, plan=plan, read_rows=cache.rows, vectorise=vectorised(settings, model, device),
            chunk=settings.train_args.vectorised_chunk, threads=settings.train_args.client_threads,
            share=lambda t: assign_clients(participants(settings, t), counts, workers)[rank - 1])
        run_cross_silo(view, device, dataset, model, client_trainer=trainer, run_dir=run_dir)
        return None
    store = RunStore(store_root, name)
    store.write_config(settings.to_dict())
    write_partition(store, plan.heterogeneity)
    root, validation = server_data(settings, data, cache.rows)
    on = functools.partial(_to, device=device)
    aggregator = HeteroFLServerAggregator(model, args, trigger_set=on(plan.trigger_set), validation_batch=on(validation),
                                          root_data=on(root), test_set=on((data.test_x, data.test_y)),
                                          round_clients=functools.partial(participants, settings),
                                          attackers_data=on(attackers_data(plan.parts, plan.malicious, cache.rows)))
    run_cross_silo(view, device, dataset, model, server_aggregator=aggregator, run_dir=run_dir)
    rows = [{k: v for k, v in h.items() if k != "kept"} for h in aggregator.history]
    store.write_metrics(rows)
    summary = summarise(rows, settings, plan)
    store.write_summary(summary)
    return summary


def _to(batch: Optional[Any], device: torch.device) -> Optional[Any]:
    return None if batch is None else tuple(t.to(device) for t in batch)
