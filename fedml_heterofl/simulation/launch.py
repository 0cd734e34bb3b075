"""How an MPI job of ``fedml-heterofl run`` was started, checked before FedML is imported.

``import fedml`` costs every rank about 1 GB of resident memory and seconds of CPU; a job started with
the wrong number of processes should fail before paying that ``N`` times (``fedml-heterofl run``
calls :func:`launch_problem` right after reading the configuration). Nothing here imports FedML.

* :func:`launch_problem` — one line naming the allowed ``-np`` (or that ``backend: MPI`` needs
  ``mpirun``), or ``None``; :func:`check_launch` raises it on rank 0 and exits quietly elsewhere.
* :func:`gpu_mapping` — FedML's ``gpu_mapping.yaml`` format: ``key: {host: [processes on GPU 0,
  processes on GPU 1, ...]}``; process i runs where the i-th entry of that listing says (hosts in the
  file's order, as ``mpirun`` fills the slots of a host file in order).
* :func:`mpi_world` — ``(rank, size)`` of this process's MPI job (``(0, 1)`` when started alone).
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

from fedml_heterofl.settings import Settings
from fedml_heterofl.yaml_input import YamlInputError, read_yaml


def mpi_world() -> Tuple[int, int]:
    """``(rank, size)`` of ``MPI.COMM_WORLD`` (initialises MPI; a process started without ``mpirun`` is a
    job of size 1)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ValueError(f"comm_args.backend: MPI needs mpi4py and an MPI library ({exc}); install them with "
                         "`pip install 'fedml_heterofl[mpi]'` and OpenMPI (run/setup.sh does both)") from None
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def gpu_mapping(path: Union[str, os.PathLike], key: str) -> List[Tuple[str, int]]:
    """Process i -> ``(host, GPU index)`` from FedML's GPU mapping file (module doc)."""
    try:
        config = read_yaml(path, "GPU mapping") or {}
    except YamlInputError as exc:
        raise ValueError(f"device_args.gpu_mapping_file: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"device_args.gpu_mapping_file: {path} must map keys to hosts, got {type(config).__name__}")
    if key not in config:
        raise ValueError(f"device_args.gpu_mapping_key: {key!r} is not in {path}; allowed: {', '.join(map(str, config))}")
    hosts = config[key]
    if not isinstance(hosts, dict) or not all(isinstance(v, list) and all(isinstance(n, int) and n >= 0 for n in v)
                                              for v in hosts.values()):
        raise ValueError(f"{path}: {key} must map each host to a list of process counts per GPU, e.g. "
                         "{node1: [2, 1]}")
    return [(str(host), gpu) for host, per_gpu in hosts.items() for gpu, n in enumerate(per_gpu) for _ in range(n)]


def launch_problem(settings: Settings, world_size: int) -> Optional[str]:
    """Why an MPI job of ``world_size`` processes cannot run ``settings`` (one line), or ``None``.

    Allowed: ``mpirun -np N`` with ``2 <= N <= client_num_per_round + 1`` (a server and 1..k workers);
    with a GPU mapping file, exactly the number of processes it places.
    """
    k = settings.train_args.client_num_per_round
    run = "mpirun -np N fedml-heterofl run --cf CONFIG"
    if settings.common_args.training_type != "cross_silo":
        return (f"common_args.training_type: comm_args.backend MPI runs FedML's cross-silo lifecycle; "
                f"allowed: cross_silo, got {settings.common_args.training_type!r}")
    device = settings.device_args
    if device.using_gpu and device.gpu_mapping_file:
        placed = len(gpu_mapping(device.gpu_mapping_file, device.gpu_mapping_key or "mapping_default"))
        if not 2 <= placed <= k + 1:
            return (f"device_args.gpu_mapping_file: {device.gpu_mapping_file} places {placed} processes; the run "
                    f"needs 2 to {k + 1} (a server and 1 to {k} workers)")
        if world_size != placed:
            return (f"this MPI job has {world_size} processes but {device.gpu_mapping_file} "
                    f"({device.gpu_mapping_key}) places {placed}: start it with mpirun -np {placed}")
        return None
    if world_size == 1:
        return (f"comm_args.backend: MPI runs a server and worker processes under mpirun: start it with `{run}`, "
                f"N from 2 to {k + 1} (this job has 1 process)")
    if world_size > k + 1:
        return (f"mpirun -np {world_size} starts {world_size - 1} workers for {k} clients per round; allowed "
                f"-np: 2 to {k + 1}")
    return None


def check_launch(settings: Settings, rank: int, world_size: int) -> None:
    """Raise :func:`launch_problem`'s line as ``ValueError`` on rank 0 (the run command prints it once) and
    ``SystemExit(2)`` on the other ranks; nothing when the launch is right."""
    problem = launch_problem(settings, world_size)
    if problem is None:
        return
    if rank == 0:
        raise ValueError(problem)
    raise SystemExit(2)
