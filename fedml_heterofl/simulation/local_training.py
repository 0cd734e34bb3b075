"""Local training (FedAvg's client step, paper Eq. (1)) as plain tensor code.

Every random choice of one client's training in one round (mini-batch order, dropout) comes from
``client_seed(seed, round, client_id)`` alone, so a client trains identically whichever process or
order runs it: the standalone simulator and FedML's MPI backend give the same updates.

Three implementations with one batch plan:

* :func:`local_sgd` trains one client with ``torch.optim.SGD`` (any model).
* :func:`local_sgd_parallel` trains many clients with :func:`local_sgd`, one per core at a time, in
  threads (models that cannot train vectorised: the CNN with its dropout, the RNN on a CPU).
* :func:`local_sgd_vectorised` trains many clients at once with ``torch.func`` (``vmap`` over
  ``grad``) for models without dropout or batch statistics (LR): one vectorised step per batch
  index instead of one Python step per client and batch. Clients with fewer batches stop updating
  when their batches run out. It matches :func:`local_sgd` up to floating-point order (tested).
"""
from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fedml_heterofl.models import ParamLayout, draws_from_global_rng, dropout_generator


#: stream id of the server's own training on its root data (FLTrust's g_0); client ids are below it
ROOT_STREAM = 2**62 + 2


def client_seed(seed: int, round_idx: int, client_id: int) -> int:
    """A 63-bit seed for one client's training in one round, from (run seed, round, client id)."""
    return int(np.random.SeedSequence([seed, round_idx, client_id]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def batch_plan(num_samples: int, epochs: int, batch_size: int, generator: torch.Generator) -> List[Tensor]:
    """Mini-batches of local indices: a fresh permutation per epoch, cut into ``batch_size`` pieces
    (the last one may be smaller), as a ``DataLoader(shuffle=True)`` would."""
    plan: List[Tensor] = []
    for _ in range(epochs):
        perm = torch.randperm(num_samples, generator=generator)
        plan.extend(perm.split(batch_size))
    return plan


def local_sgd(
    model: nn.Module,
    layout: ParamLayout,
    global_params: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int,
    loss: nn.Module | None = None,
    global_rng: bool = True,
) -> Tensor:
    """Train ``model`` from ``global_params`` on ``(x, y)``; return the update ``w_i - w_t``.

    ``model`` is used as scratch space (its parameters are overwritten). One generator seeded by
    ``seed`` draws the batch plan and then the masks of our :class:`~fedml_heterofl.models.Dropout`
    layers (:func:`~fedml_heterofl.models.dropout_generator`). With ``global_rng`` (default), torch's
    global RNG is also seeded by ``seed`` for the duration, for layers that draw from it (torch's
    ``nn.Dropout`` in a user's model), and restored afterwards (``torch.random.fork_rng``); clients
    training in parallel threads (:func:`local_sgd_parallel`) pass ``False``, as the global RNG is
    shared by all threads.
    """
    loss = loss if loss is not None else nn.CrossEntropyLoss()
    layout.load(model, global_params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    plan = batch_plan(len(y), epochs, batch_size, generator)
    with torch.random.fork_rng(devices=[], enabled=global_rng), dropout_generator(generator):
        if global_rng:
            torch.manual_seed(seed)
        for idx in plan:
            opt.zero_grad(set_to_none=True)
            loss(model(x[idx]), y[idx]).backward()
            opt.step()
    return layout.flatten(model) - global_params


def local_sgd_parallel(
    model: nn.Module,
    layout: ParamLayout,
    global_params: Tensor,
    x: Tensor,
    y: Tensor,
    client_indices: Sequence[Tensor],
    *,
    seeds: Sequence[int],
    workers: int,
    **sgd: Any,
) -> Tensor:
    """:func:`local_sgd` for ``k`` clients (client i owns rows ``client_indices[i]`` of ``(x, y)``),
    ``workers`` of them at a time in threads, each thread on its own copy of ``model`` with one
    intra-op thread (``torch.set_num_threads(1)`` for the duration).

    For models that cannot train vectorised (dropout; PyTorch's fused LSTM kernel): a CNN step on a
    batch of 32 or an LSTM step on a batch of 10 is too small to split well over cores (an LSTM step
    splits 80 sequential time steps; on a shared machine a descheduled thread stalls each of them),
    while ``workers`` whole clients keep every core busy with one client's weights in its own cache.
    Every client computes with one intra-op thread and draws from its own seeded generator, so its
    update is the same bit for bit whichever worker runs it, in whatever order, next to whichever
    clients (tested). The model must not draw from torch's global RNG
    (:func:`~fedml_heterofl.models.draws_from_global_rng`) and must have no buffers (BatchNorm's running
    statistics, which a scratch model carries from one client to the next, would depend on the order).

    Returns:
        ``(k, d)`` updates, rows in ``client_indices`` order.
    """
    if draws_from_global_rng(model):
        raise ValueError("local_sgd_parallel: the model has dropout layers that draw from torch's global RNG "
                         "(shared by all threads); use fedml_heterofl.models.Dropout, or train with local_sgd")
    if any(True for _ in model.buffers()):
        raise ValueError("local_sgd_parallel: the model has buffers (e.g. BatchNorm statistics), whose values "
                         "would depend on which clients each thread trained before; train with local_sgd")
    k = len(client_indices)
    out = global_params.new_empty(k, layout.d)
    copies = [model] + [copy.deepcopy(model) for _ in range(min(workers, k) - 1)]
    queue = iter(range(k))
    lock = threading.Lock()

    def work(copy_: nn.Module) -> None:
        while True:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            ix = client_indices[i]
            out[i] = local_sgd(copy_, layout, global_params, x[ix], y[ix], seed=seeds[i], global_rng=False, **sgd)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(copies)) as pool:
            for done in [pool.submit(work, c) for c in copies]:
                done.result()
    finally:
        torch.set_num_threads(threads)
    return out


def server_update(model: nn.Module, layout: ParamLayout, global_params: Tensor, root: Tuple[Tensor, Tensor], *,
                  seed: int, round_idx: int, **sgd: Any) -> Tensor:
    """FLTrust's server update ``g_0`` (Cao et al., NDSS'21): :func:`local_sgd` from ``w_t`` on the
    server's root data with the clients' settings ``sgd``, seeded by ``(seed, round, ROOT_STREAM)``."""
    x, y = root
    return local_sgd(model, layout, global_params, x, y, seed=client_seed(seed, round_idx, ROOT_STREAM), **sgd)


def local_sgd_vectorised(
    model: nn.Module,
    layout: ParamLayout,
    global_params: Tensor,
    x: Tensor,
    y: Tensor,
    client_indices: Sequence[Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seeds: Sequence[int],
) -> Tensor:
    """Train ``k`` clients at once; client i owns rows ``client_indices[i]`` of ``(x, y)``.

    The model must be deterministic in training mode (no dropout, no batch statistics). Uses the
    same :func:`batch_plan` per client as :func:`local_sgd` and SGD with PyTorch's semantics
    (``g += wd·w``; ``b = μ·b + g``, first step ``b = g``; ``w -= lr·b``).

    Returns:
        ``(k, d)`` updates.
    """
    k = len(client_indices)
    # Each client's batches as one padded (steps_i, batch_size) block of data rows, built once.
    plans = [batch_plan(len(ix), epochs, batch_size, torch.Generator().manual_seed(s))
             for ix, s in zip(client_indices, seeds)]
    lengths = torch.tensor([len(p) for p in plans], dtype=torch.long)
    steps = int(lengths.max()) if k else 0
    # Clients sorted by their number of steps (most first): the clients still training at step t
    # are then the prefix [:active[t]], and only they are computed.
    order = torch.argsort(lengths, descending=True, stable=True)
    active = (lengths[order][None, :] > torch.arange(steps)[:, None]).sum(1).tolist()
    rows = torch.zeros(steps, k, batch_size, dtype=torch.long)
    mask = torch.zeros(steps, k, batch_size)
    for j, i in enumerate(order.tolist()):
        n = len(client_indices[i])  # batch_plan: per epoch ceil(n / batch_size) batches, the last one short
        if n == 0:
            continue
        pos = torch.arange(n).repeat(epochs)
        t = torch.arange(epochs).repeat_interleave(n) * -(-n // batch_size) + pos // batch_size
        rows[t, j, pos % batch_size] = client_indices[i][torch.cat(plans[i])]
        mask[t, j, pos % batch_size] = 1.0
    params = global_params.expand(k, -1).clone()
    buf = torch.zeros_like(params) if momentum else None
    buffers = dict(model.named_buffers())

    def batch_loss(p: Tensor, xb: Tensor, yb: Tensor, m: Tensor) -> Tensor:
        logits = functional_call(model, (layout.unflatten(p), buffers), (xb,))
        per = nn.functional.cross_entropy(logits, yb, reduction="none")
        return (per * m).sum() / m.sum().clamp_min(1.0)

    per_client_grad = vmap(grad(batch_loss))
    for t in range(steps):
        a = active[t]
        r = rows[t, :a]
        g = per_client_grad(params[:a], x[r], y[r], mask[t, :a])
        if weight_decay:
            g = g + weight_decay * params[:a]
        if buf is not None:
            buf[:a] = g if t == 0 else momentum * buf[:a] + g
            g = buf[:a]
        params[:a] -= lr * g
    params = params[torch.argsort(order)]
    return params - global_params
