"""The MPI backend: FedML's cross-silo ``FedMLRunner`` with our trainer and aggregator, one process per
client (``mpirun -np N+1 fedml-heterofl run --cf config/X_mpi.yaml``; add ``--hostfile`` and a
``device_args.gpu_mapping_file`` for several GPU nodes).

Every rank builds the same :class:`~fedml_heterofl.simulation.workload.Workload` from the same
settings (same seed, partition, attackers, trigger set, initial model); client rank r gets client
r - 1's clean data (its data attack, if any, runs in the trainer's ``update_dataset``). Rank 0 writes
the run folder: ``config.yaml``, ``metrics.csv`` from the aggregator's history and ``summary.json``.
FedML's MPI job cannot resume a killed run (FedML has no checkpoint hook); a crashed rank ends the
whole job with an error (:func:`~fedml_heterofl.fedml_bridge.mpi.run_cross_silo`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, TensorDataset

from fedml_heterofl.experiments.store import RunStore
from fedml_heterofl.settings import Settings
from fedml_heterofl.simulation.runner import run_name, summarise
from fedml_heterofl.simulation.workload import Workload, build_workload

log = logging.getLogger(__name__)


def fedml_dataset(work: Workload, batch_size: int) -> List[Any]:
    """FedML's 8-item dataset list from a workload (client i: its clean partition)."""
    data = work.dataset

    def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

    test = loader(data.test_x, data.test_y)
    train_local = {i: loader(data.train_x[ix], data.train_y[ix]) for i, ix in enumerate(work.parts)}
    counts = {i: len(ix) for i, ix in enumerate(work.client_index)}  # trigger rows included, as standalone
    return [len(data.train_y), len(data.test_y), None, test, counts, train_local, {i: test for i in train_local},
            data.num_classes + (work.trigger_set is not None)]  # the model's outputs


def run_mpi(settings: Settings, *, results_dir: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Run this MPI rank's part; rank 0 returns the run's summary, client ranks ``None``."""
    import fedml_heterofl.fedml_bridge as bridge

    store_root = Path(results_dir or settings.common_args.results_dir)
    name = run_name(settings)
    run_dir = store_root / name
    args = bridge.init(settings.to_fedml_args(), run_dir)
    work = build_workload(settings)
    device = torch.device(f"cuda:{args.gpu_id}") if settings.device_args.using_gpu else torch.device("cpu")
    dataset = fedml_dataset(work, settings.train_args.batch_size)
    if args.rank != 0:
        trainer = bridge.HeteroFLClientTrainer(work.model, args, trigger_set=work.trigger_set)
        bridge.run_cross_silo(args, device, dataset, work.model, client_trainer=trainer, run_dir=run_dir)
        return None
    store = RunStore(store_root, name)
    store.write_config(settings.to_dict())
    aggregator = bridge.HeteroFLServerAggregator(work.model, args, trigger_set=work.trigger_set,
                                                 validation_batch=work.validation, root_data=work.root)
    bridge.run_cross_silo(args, device, dataset, work.model, server_aggregator=aggregator, run_dir=run_dir)
    rows = [{k: v for k, v in h.items() if k != "kept"} for h in aggregator.history]
    store.write_metrics(rows)
    summary = summarise(rows, settings, work)
    store.write_summary(summary)
    return summary
