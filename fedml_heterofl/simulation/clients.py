"""The client side of a round, shared by both backends: train a set of clients from ``w_t``, and split a
round's clients over the MPI backend's worker processes.

* :func:`train_clients` — the honest updates of some clients (Alg. 1, line 5, FedAvg's local step),
  vectorised with ``torch.func`` where the model allows (:func:`can_vectorise`), else one client per
  thread (:func:`~fedml_heterofl.simulation.local_training.local_sgd_parallel`) or one client after
  another; the standalone simulator calls it for the round's clients, an MPI worker for its share.
  Each client's training is seeded by ``(seed, round, client)`` alone, so the update of a client does
  not depend on which process trains it or beside which other clients (up to floating-point
  reassociation: a vectorised pass over a different set of clients may round differently in the last
  bit).
* :func:`assign_clients` — which worker trains which of the round's clients: a pure function of the
  round's clients (itself a function of seed and round,
  :func:`~fedml_heterofl.simulation.rounds.participants`), their sample counts and the number of
  workers. Every worker computes its own share; nothing about the assignment is sent.
"""
from __future__ import annotations

import heapq
from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor, nn

from fedml_heterofl.models import ParamLayout, draws_from_global_rng
from fedml_heterofl.settings import Settings, SettingsError
from fedml_heterofl.simulation.local_training import local_sgd, local_sgd_parallel, local_sgd_vectorised


def can_vectorise(model: nn.Module) -> bool:
    """Whether many copies of a model can train in one ``vmap``: no dropout, no buffers (batch norm)."""
    has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    return not has_dropout and not any(True for _ in model.buffers())


def can_thread(model: nn.Module) -> bool:
    """Whether clients of ``model`` can train in parallel threads: its dropout draws from a client's own
    generator, not torch's global RNG, and it has no buffers a scratch copy would carry between clients."""
    return not draws_from_global_rng(model) and not any(True for _ in model.buffers())


def vectorised(settings: Settings, model: nn.Module, device: torch.device) -> bool:
    """``train_args.vectorised_training`` resolved for ``model`` on ``device`` (null: whenever
    :func:`can_vectorise`, except on a CPU for models whose clients train faster one per core,
    ``vectorise_on_cpu = False``: the RNN)."""
    vectorise = settings.train_args.vectorised_training
    if vectorise and not can_vectorise(model):
        raise SettingsError(f"train_args.vectorised_training: {settings.model_args.model} has dropout or batch "
                            "norm and cannot be trained vectorised; allowed: false or null (auto)")
    if vectorise is None:
        return can_vectorise(model) and (device.type != "cpu" or getattr(model, "vectorise_on_cpu", True))
    return vectorise


def client_threads(configured: Optional[int], device: torch.device) -> int:
    """``train_args.client_threads`` when set, else torch's current intra-op thread count on a CPU (one
    client per core) and 1 on a GPU."""
    if configured is not None:
        return configured
    return torch.get_num_threads() if device.type == "cpu" else 1


def train_clients(model: nn.Module, layout: ParamLayout, w: Tensor, x: Tensor, y: Tensor, index: Sequence[Tensor],
                  seeds: Sequence[int], *, vectorise: bool, chunk: int, threads: int = 1, **sgd: Any) -> Tensor:
    """Honest updates ``(k, d)`` of ``k`` clients trained from the flat global parameters ``w``.

    Client i trains on rows ``index[i]`` of ``(x, y)`` with seed ``seeds[i]``; ``vectorise`` trains
    ``chunk`` clients per ``vmap`` pass (:func:`local_sgd_vectorised`), else ``threads > 1`` trains that
    many at once in threads when the model allows (:func:`can_thread`, :func:`local_sgd_parallel`), else
    one at a time (:func:`local_sgd`; ``model`` is scratch space). ``sgd``:
    :attr:`~fedml_heterofl.settings.Settings.sgd`.
    """
    if not vectorise and threads > 1 and len(index) > 1 and can_thread(model):
        return local_sgd_parallel(model, layout, w, x, y, index, seeds=seeds, workers=threads, **sgd)
    U = w.new_empty(len(index), layout.d)  # filled in place: no second (k, d) copy from stacking rows
    step = chunk if vectorise else 1
    for s in range(0, len(index), step):
        if vectorise:
            # a batch larger than every client's data is that data (the same batch plan): capped, so the
            # vectorised pass does not pad each client to batch_size rows
            batch = min(sgd["batch_size"], max(1, *(len(ix) for ix in index[s:s + step])))
            U[s:s + step] = local_sgd_vectorised(model, layout, w, x, y, index[s:s + step], seeds=seeds[s:s + step],
                                                 **{**sgd, "batch_size": batch})
        else:
            U[s] = local_sgd(model, layout, w, x[index[s]], y[index[s]], seed=seeds[s], **sgd)
    return U


def assign_clients(clients: Tensor, counts: Tensor, workers: int) -> List[Tensor]:
    """Split a round's ``clients`` over ``workers`` processes, balancing their training rows.

    Greedy longest-processing-time: clients by decreasing sample count (ties: smaller id first) each go to
    the worker with the fewest rows so far (ties: lower worker). A worker's load is then at most the mean
    load plus one client's rows. Each share is returned sorted by client id; a share may be empty when
    there are fewer clients than workers.

    Args:
        clients: the round's client ids ``(k,)``.
        counts: sample counts of *all* clients (indexed by client id).
        workers: the number of worker processes (>= 1).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rows = counts.double()[clients].tolist()
    heap = [(0.0, j) for j in range(workers)]  # (load, worker): the least loaded, then the lowest, on top
    shares: List[List[int]] = [[] for _ in range(workers)]
    for n, c in sorted(zip(rows, clients.tolist()), key=lambda nc: (-nc[0], nc[1])):
        load, j = heapq.heappop(heap)
        shares[j].append(c)
        heapq.heappush(heap, (load + n, j))
    return [torch.tensor(sorted(s), dtype=torch.long) for s in shares]
