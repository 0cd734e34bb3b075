"""Round-time benchmark: our standalone FedAvg and HeteroFL rounds against a peer measured in the same run,
and the CNN's and RNN's training rate against the best rate a plain training step of the same model reaches.

Models and peers (``--models``, default all three):

* ``lr``, ``cnn``: real MNIST, the paper-scale settings of ``config/mnist_lr.yaml`` (100 clients, all
  taking part every round, Dirichlet q = 0.2 partition, 1 local epoch, batch 32, SGD; the CNN takes its
  learning rate from ``config/fashion_mnist_cnn.yaml``). Peer: FedML 0.9.6's ``backend: sp`` FedAvg
  (``fedml_sp``). The LR is our class on both sides (FedML's ``LogisticRegression`` adds a sigmoid);
  for the CNN FedML trains its own ``CNN_DropOut`` (the same layers and parameter count as our
  :class:`~fedml_heterofl.models.CNN`, FedML's code; ``--fedml-model ours`` gives it our class, to
  compare the round loops alone).
* ``rnn``: Shakespeare (``config/shakespeare_rnn.yaml``: LEAF's 2-layer LSTM, batch 10, learning rate
  0.8), the ``--clients`` speakers with the most lines, at most ``--rnn-windows`` windows each (80 %
  for training; the default 100 as in ``config/grids/table1_shakespeare_rnn.yaml``). Peer: our own
  simulator with ``vectorised_training: false`` and ``client_threads: 1`` (``loop``): one client after
  another through PyTorch's fused ``nn.LSTM`` kernel on all ``--threads`` intra-op threads, i.e. the
  round as it ran before this benchmark's RNN row existed.

Same work on every side of a model: the same seed and therefore the same partition, no attack. Our
systems: ``fedavg`` (``defense_args.enable_defense: false``) and ``heterofl`` (``defense_type:
heterofl`` with its default parameters; the model has the watermark output and every client also
trains on the 4 trigger samples, part of HeteroFL's cost), both with the simulator's default local
training (``vectorised_training: null``); for the RNN also ``vectorised``: FedAvg with all clients
in one ``vmap(grad)`` pass through the vmappable LSTM (``vectorised_training: true``).

``plain`` (CNN and RNN): the roofline of this machine for the model — a plain training step
(forward, backward, ``torch.optim.SGD`` step) of the same model class on one batch of the same data,
repeated, at each batch size of :data:`PLAIN_BATCHES`, both with one model on ``--threads`` intra-op
threads and with ``--threads`` copies stepping at once, one intra-op thread each
(:func:`plain_step_rates`); its best rate (FLOP/s) is the reference for our round's rate. FLOPs are counted by ``torch.utils.flop_counter`` on one training step of the model
(:func:`train_flops_per_sample`; the CNN: 71.6 MFLOP per image, the RNN: 380 MFLOP per window); a
round's FLOPs = FLOPs per sample × the training samples of all clients.

Every cell runs in its own worker process (FedML's ``init`` seeds and patches process-wide state;
each cell's memory and thread pool are its own), with ``torch.set_num_threads(--threads)``. The
workers set up in parallel (untimed), then their rounds are interleaved: round r of every cell runs
before round r + 1 of any, one worker computing at a time while the others wait, in an order rotated
each round, so that a change in the machine's background load hits all cells alike.

What a "round" is (the same accounting on both sides: client training + aggregation, no evaluation,
no checkpointing):

* FedML: ``FedAvgAPI.train`` evaluates every client on the whole test set at round 0, every
  ``frequency_of_the_test`` rounds and at the last round, inside its round loop. A subclass replaces
  the two evaluation methods by no-ops (a test frequency alone cannot skip round 0 or the last round)
  and times each round from ``_client_sampling`` (the first thing a round does) to the return of
  ``_aggregate`` (after which only ``load_state_dict`` of the new global model remains). The round
  loop itself (``deepcopy`` of the global state per client, ``Client.train``, FedML's aggregation)
  is FedML's own code, unchanged. Its dataset is
  :func:`fedml_heterofl.fedml_bridge.convert.fedml_dataset` of our workload, i.e. exactly our
  partition; each client's ``DataLoader`` is materialised once, before timing, into a list of
  ``(x, y)`` batches, which is what FedML's own MNIST loader (``fedml.data.MNIST.data_loader.batch_data``)
  hands its trainer (``--fedml-loader dataloader`` keeps the ``DataLoader``, which adds per-sample
  indexing and collation to FedML's round).
* Ours: ``time_train + time_server`` of each row of ``metrics.csv`` (local training of all clients,
  then poisoning (none here), the defense and the update of ``w``); ``time_eval`` and the
  checkpoint write are not counted, and the test frequency is set past the last round so only the
  last round evaluates.

Reported per cell: the median over the rounds after the first (warm-up: lazy imports, allocator
growth, ``vmap`` tracing); with one round, that round; for ``plain``, the best rate over all its
rounds. ``--threads`` matters on a shared machine: with other CPU-bound processes running, two
intra-op threads per process oversubscribe the cores and every small parallel operation waits for a
descheduled thread; ``--threads 1`` measures the code rather than the scheduler there. Per-round
lists and our train/server split go to ``--json``. FedML's home, its outputs, our run folders and the
workers' logs go to a temporary folder (``--workdir`` to keep them), never the repository.

Targets (issues 9 and 12), :data:`SPEEDUP_TARGET` against the model's peer: LR >= 3x FedML sp, CNN
>= 1x FedML sp and >= :data:`ROOFLINE_TARGET` of the plain step's best rate, RNN >= 3x the per-client
loop; our HeteroFL round <= :data:`OVERHEAD_TARGET` x our FedAvg round. Where a target is not met, the
verdict names the measured limit: for the RNN, the loop's rate against the plain step's best rate
bounds any speed-up of this round's arithmetic on this machine.

Usage: ``python benchmarks/rounds.py [--models lr cnn rnn] [--rounds 6] [--cnn-rounds 2] [--rnn-rounds 2]
[--threads 2] [--clients 100] [--json out.json] [--quick]``
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

log = logging.getLogger("benchmarks.rounds")

REPO = Path(__file__).resolve().parents[1]
MODELS = ("lr", "cnn", "rnn")
#: each model's cells: the peer first, then ours; ``plain`` is the model's plain training step
SYSTEMS: Dict[str, Tuple[str, ...]] = {"lr": ("fedml_sp", "fedavg", "heterofl"),
                                       "cnn": ("fedml_sp", "fedavg", "heterofl", "plain"),
                                       "rnn": ("loop", "fedavg", "heterofl", "vectorised", "plain")}
#: the issues' targets: peer / our FedAvg >= SPEEDUP_TARGET[model]; our HeteroFL / our FedAvg <= OVERHEAD_TARGET;
#: CNN: our FedAvg round's FLOP/s >= ROOFLINE_TARGET x the plain step's best
SPEEDUP_TARGET = {"lr": 3.0, "cnn": 1.0, "rnn": 3.0}
OVERHEAD_TARGET = 1.25
ROOFLINE_TARGET = 0.85
#: batch sizes of the plain training step (the CNN: FedML's batch 32 up to 512; the RNN: LEAF's batch 10 up to 16 clients' batches)
PLAIN_BATCHES = {"cnn": (32, 64, 128, 256, 512), "rnn": (10, 40, 160)}
#: seconds each plain-step batch size is timed per round (at least 2 steps)
PLAIN_SECONDS = 2.0
#: ``--quick``: a smoke run (CI): 4 clients with 8 samples each, one round per cell, one tiny plain batch
QUICK = dict(clients=4, samples_per_client=8, rounds=1, plain_batches={"cnn": (8,), "rnn": (4,)}, plain_seconds=0.0)


# ---------------------------------------------------------------------------------------------
# settings and workload
# ---------------------------------------------------------------------------------------------

def bench_config(system: str, model: str, *, clients: int, rounds: int, seed: int,
                 rnn_windows: int = 100) -> Dict[str, Any]:
    """The FedML-style config of one cell: ``config/mnist_lr.yaml`` (``lr``, ``cnn``) or
    ``config/shakespeare_rnn.yaml`` (``rnn``: the ``clients`` speakers with the most lines, at most
    ``rnn_windows`` windows each) with the model, client count, round count, seed, no attack, and
    the defense of ``system`` (FedAvg for all but ``heterofl``); ``loop`` trains one client at a time
    (``vectorised_training: false``, ``client_threads: 1``), ``vectorised`` all at once (``true``)."""
    if model not in SYSTEMS:
        raise ValueError(f"model: {model!r}; allowed: {', '.join(MODELS)}")
    if system not in SYSTEMS[model]:
        raise ValueError(f"system: {system!r} for model {model}; allowed: {', '.join(SYSTEMS[model])}")
    if model == "rnn":
        cfg = yaml.safe_load((REPO / "config" / "shakespeare_rnn.yaml").read_text())
        cfg["data_args"].update(max_clients=clients, max_samples_per_client=rnn_windows)
    else:
        cfg = yaml.safe_load((REPO / "config" / "mnist_lr.yaml").read_text())
        cfg["data_args"]["dataset"] = "mnist"
        if model == "cnn":  # the CNN's learning rate as in its own config (timing does not depend on it)
            cnn = yaml.safe_load((REPO / "config" / "fashion_mnist_cnn.yaml").read_text())
            cfg["train_args"]["learning_rate"] = cnn["train_args"]["learning_rate"]
    cfg["common_args"].update(random_seed=seed, run_name=f"bench_{system}_{model}")
    cfg["model_args"]["model"] = model
    cfg["train_args"].update(client_num_in_total=clients, client_num_per_round=clients, comm_round=rounds)
    if system in ("loop", "vectorised"):
        cfg["train_args"]["vectorised_training"] = system == "vectorised"
    if system == "loop":  # one client after another on all intra-op threads: the round as it ran before
        cfg["train_args"]["client_threads"] = 1
    cfg["validation_args"]["frequency_of_the_test"] = rounds + 1  # only the (untimed) last-round evaluation
    cfg["attack_args"] = {"enable_attack": False, "byzantine_client_num": 0}
    if system == "heterofl":
        cfg["defense_args"] = {"enable_defense": True, "defense_type": "heterofl", "defense_params": {}}
    else:
        cfg["defense_args"] = {"enable_defense": False}
    return cfg


def _truncate(work, samples_per_client: Optional[int]):
    """The workload with each client's partition cut to its first ``samples_per_client`` rows (for
    smoke tests; trigger rows, when present, stay) and the test set (evaluated after the last, timed
    round) to its first ``10 * samples_per_client`` rows. ``None`` leaves it unchanged."""
    if samples_per_client is None:
        return work
    parts = [ix[:samples_per_client] for ix in work.parts]
    index = [torch.cat([p, ci[len(full):]]) for p, full, ci in zip(parts, work.parts, work.client_index)]
    test = tuple(t[:10 * samples_per_client] for t in work.test)
    return dataclasses.replace(work, parts=parts, client_index=index, test=test)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _summary(times: Sequence[float]) -> float:
    """Median per-round seconds after the warm-up round (the only round when there is one)."""
    return median(times[1:]) if len(times) > 1 else times[0]


def train_flops_per_sample(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step (forward + backward, cross-entropy) per sample of the batch ``(x, y)``,
    counted by ``torch.utils.flop_counter.FlopCounterMode``. The step runs under ``vmap`` over one copy
    of the parameters: there every layer is made of operations the counter knows (PyTorch's fused CPU
    LSTM kernel is not one of them); the arithmetic is the model's."""
    from torch.func import functional_call, vmap
    from torch.utils.flop_counter import FlopCounterMode

    params = {n: p.detach()[None].requires_grad_() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            loss = vmap(lambda p: torch.nn.functional.cross_entropy(functional_call(model, (p, buffers), (x,)), y),
                        randomness="same")(params)
            loss.sum().backward()
    finally:
        model.train(was_training)
    return counter.get_total_flops() / len(x)


# ---------------------------------------------------------------------------------------------
# one cell
# ---------------------------------------------------------------------------------------------

class Gate:
    """Hand-off between a cell and the parent process, so that only one cell computes at a time.

    The cell calls :meth:`wait` before each round starts, :meth:`report` once a round's times are known
    and :meth:`close` at the end. A round's times are sent when the cell next waits (or closes), i.e.
    when the cell is idle; before the first round a message with the cell's FLOPs per round
    (:attr:`flops`, ``None`` for the plain step) says the set-up is done. Without streams (in-process
    runs) it only records the rounds.
    """

    MARK = "@@bench "

    def __init__(self, stream_in: Optional[IO[str]] = None, stream_out: Optional[IO[str]] = None) -> None:
        self.rounds: List[Dict[str, Any]] = []
        self.flops: Optional[float] = None
        self._in, self._out = stream_in, stream_out
        self._pending: Dict[str, Any] = {}

    def report(self, times: Dict[str, Any]) -> None:
        self.rounds.append(times)
        self._pending = times

    def _send(self) -> None:
        if self._out is not None:
            message = self._pending if self.rounds else {"flops": self.flops}
            self._out.write(self.MARK + json.dumps(message) + "\n")
            self._out.flush()
        self._pending = {}

    def wait(self) -> None:
        self._send()
        if self._in is not None and self._in.readline().strip() != "go":
            raise SystemExit("benchmark parent went away")

    def close(self) -> None:
        if self._pending:
            self._send()


def _timed_fedavg_api():
    """FedML's sp ``FedAvgAPI`` with evaluation switched off and each round timed (module doc)."""
    from fedml.simulation.sp.fedavg.fedavg_api import FedAvgAPI

    class TimedFedAvgAPI(FedAvgAPI):
        gate: Gate
        _start = 0.0

        def _client_sampling(self, *a: Any, **k: Any):
            self.gate.wait()
            self._start = time.perf_counter()
            return super()._client_sampling(*a, **k)

        def _aggregate(self, w_locals):
            out = super()._aggregate(w_locals)
            self.gate.report({"seconds": time.perf_counter() - self._start})
            return out

        def _local_test_on_all_clients(self, round_idx: int) -> None:
            return None

        def _local_test_on_validation_set(self, round_idx: int) -> None:
            return None

    return TimedFedAvgAPI


def _fedml_cnn(seed: int) -> torch.nn.Module:
    """FedML's own ``CNN_DropOut`` with 10 outputs, seeded, taking our ``(N, 1, 28, 28)`` images (its
    ``forward`` adds the channel axis itself, so FedML feeds it ``(N, 28, 28)``)."""
    from fedml.model.cv.cnn import CNN_DropOut

    class FedMLCNN(CNN_DropOut):
        def forward(self, x):
            return super().forward(x.reshape(-1, 28, 28))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FedMLCNN(only_digits=True)


def _run_fedml(model: str, gate: Gate, *, clients: int, rounds: int, seed: int, workdir: Path, loader: str,
               samples_per_client: Optional[int], rnn_windows: int, fedml_model: str) -> None:
    from fedml_heterofl.fedml_bridge import offline
    from fedml_heterofl.fedml_bridge.args import fedml_args
    from fedml_heterofl.settings import settings_from_dict
    from fedml_heterofl.fedml_bridge.convert import fedml_dataset
    from fedml_heterofl.simulation.workload import build_workload

    settings = settings_from_dict(bench_config("fedml_sp", model, clients=clients, rounds=rounds, seed=seed,
                                               rnn_windows=rnn_windows))
    work = _truncate(build_workload(settings), samples_per_client)
    net = _fedml_cnn(seed) if model == "cnn" and fedml_model == "fedml" else copy.deepcopy(work.model)
    x, y = work.x[:settings.train_args.batch_size], work.y[:settings.train_args.batch_size]
    gate.flops = train_flops_per_sample(net, x, y) * sum(len(ix) for ix in work.parts) * settings.train_args.epochs
    run_dir = workdir / f"bench_fedml_sp_{model}"
    args = fedml_args(settings)
    args.backend = "sp"
    args = offline.init(args, run_dir)
    dataset = fedml_dataset(work, settings.train_args.batch_size)
    if loader == "batched":  # as FedML's own MNIST loader: a list of (x, y) batches per client
        dataset[5] = {i: [(x, y) for x, y in dl] for i, dl in dataset[5].items()}
    api = _timed_fedavg_api()(args, torch.device("cpu"), dataset, net)
    api.gate = gate
    with offline.fedml_home(run_dir):
        api.train()


def _run_ours(system: str, model: str, gate: Gate, *, clients: int, rounds: int, seed: int, workdir: Path,
              samples_per_client: Optional[int], rnn_windows: int) -> None:
    from fedml_heterofl.settings import settings_from_dict
    from fedml_heterofl.simulation.runner import Simulation
    from fedml_heterofl.simulation.workload import build_workload

    settings = settings_from_dict(bench_config(system, model, clients=clients, rounds=rounds, seed=seed,
                                               rnn_windows=rnn_windows))
    work = _truncate(build_workload(settings), samples_per_client)
    x, y = work.x[:settings.train_args.batch_size], work.y[:settings.train_args.batch_size]
    gate.flops = (train_flops_per_sample(work.model, x, y) * sum(len(ix) for ix in work.client_index)
                  * settings.train_args.epochs)
    sim = Simulation(settings, results_dir=str(workdir), workload=work)
    save_round = sim.store.save_round

    def timed_save_round(state: Dict[str, Any], rows: List[Dict[str, Any]]) -> None:
        save_round(state, rows)  # after the round's times were taken: not timed
        row = rows[-1]
        gate.report({"seconds": row["time_train"] + row["time_server"], "train": row["time_train"],
                     "server": row["time_server"]})
        if row["round"] < rounds - 1:
            gate.wait()

    sim.store.save_round = timed_save_round
    gate.wait()
    sim.run(progress=False)


def plain_step_rates(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batches: Sequence[int], *, lr: float,
                     seconds: float, threads: int) -> Dict[str, float]:
    """FLOP/s of a plain training step (forward, backward, ``torch.optim.SGD`` step) of ``model`` on the
    first ``b`` rows of ``(x, y)``, for each batch size ``b``, two ways of using ``threads`` cores: one
    model with ``threads`` intra-op threads (key ``"b"``), and ``threads`` copies of the model stepping
    at once in threads with one intra-op thread each (key ``"b x threads"``; the sum of their rates).
    Each copy takes one untimed step, then steps for at least ``seconds`` (and at least 2)."""
    rates: Dict[str, float] = {}
    caller_threads = torch.get_num_threads()
    for b in batches:
        xb, yb = x[:b], y[:b]
        flops = train_flops_per_sample(model, xb, yb) * len(xb)
        for copies in sorted({1, threads}):
            nets = [model] + [copy.deepcopy(model) for _ in range(copies - 1)]
            ready = threading.Barrier(copies + 1)

            def run(net: torch.nn.Module) -> int:
                net.train()
                opt = torch.optim.SGD(net.parameters(), lr=lr)

                def step() -> None:
                    opt.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(net(xb), yb).backward()
                    opt.step()

                step()
                ready.wait()
                steps, start = 0, time.perf_counter()
                while steps < 2 or time.perf_counter() - start < seconds:
                    step()
                    steps += 1
                return steps

            torch.set_num_threads(threads if copies == 1 else 1)
            try:
                with ThreadPoolExecutor(copies) as pool:
                    jobs = [pool.submit(run, net) for net in nets]
                    ready.wait()
                    start = time.perf_counter()
                    steps = sum(job.result() for job in jobs)
                    rates[str(b) if copies == 1 else f"{b} x {copies}"] = flops * steps / (time.perf_counter() - start)
            finally:
                torch.set_num_threads(caller_threads)
    return rates


def _run_plain(model: str, gate: Gate, *, clients: int, rounds: int, seed: int, samples_per_client: Optional[int],
               rnn_windows: int, plain_batches: Sequence[int], plain_seconds: float, **_: Any) -> None:
    """The model's plain training step (:func:`plain_step_rates`) once per round, on the FedAvg cell's
    model and training data (batches of ``plain_batches`` rows, the largest first cut to the data)."""
    from fedml_heterofl.settings import settings_from_dict
    from fedml_heterofl.simulation.workload import build_workload

    settings = settings_from_dict(bench_config("plain", model, clients=clients, rounds=rounds, seed=seed,
                                               rnn_windows=rnn_windows))
    work = _truncate(build_workload(settings), samples_per_client)
    rows = torch.cat(work.client_index)
    x, y = work.x[rows], work.y[rows]
    batches = sorted({min(b, len(y)) for b in plain_batches})
    for _ in range(rounds):
        gate.wait()
        start = time.perf_counter()
        rates = plain_step_rates(work.model, x, y, batches, lr=settings.train_args.learning_rate, seconds=plain_seconds,
                                 threads=torch.get_num_threads())
        best = max(rates, key=rates.get)
        gate.report({"seconds": time.perf_counter() - start, "gflops": rates[best] / 1e9, "batch": best,
                     "batch_gflops": {b: r / 1e9 for b, r in rates.items()}})


def run_cell(system: str, model: str, *, clients: int = 100, rounds: int = 3, threads: int = 2, seed: int = 0,
             workdir: Path, loader: str = "batched", samples_per_client: Optional[int] = None, rnn_windows: int = 100,
             fedml_model: str = "fedml", plain_batches: Optional[Sequence[int]] = None,
             plain_seconds: float = PLAIN_SECONDS, gate: Optional[Gate] = None) -> Dict[str, Any]:
    """Time ``rounds`` rounds of one cell in this process; returns the cell's row. With a ``gate`` wired
    to a parent, each round starts only when the parent says so."""
    bench_config(system, model, clients=clients, rounds=rounds, seed=seed)  # checks the names
    gate = gate if gate is not None else Gate()
    torch.set_num_threads(threads)
    _seed_all(seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(clients=clients, rounds=rounds, seed=seed, workdir=workdir, samples_per_client=samples_per_client,
                  rnn_windows=rnn_windows)
    if system == "fedml_sp":
        _run_fedml(model, gate, loader=loader, fedml_model=fedml_model, **kwargs)
    elif system == "plain":
        _run_plain(model, gate, plain_batches=plain_batches or PLAIN_BATCHES[model], plain_seconds=plain_seconds,
                   **kwargs)
    else:
        _run_ours(system, model, gate, **kwargs)
    gate.close()
    if len(gate.rounds) != rounds:
        raise RuntimeError(f"{system} {model}: {len(gate.rounds)} rounds timed, expected {rounds}")
    return cell_row(system, model, gate.rounds, threads=threads, flops=gate.flops)


def cell_row(system: str, model: str, rounds: Sequence[Dict[str, Any]], *, flops: Optional[float] = None,
             **meta: Any) -> Dict[str, Any]:
    """A cell's row: per-round lists and their summaries (:func:`_summary`); a round cell with its FLOPs per
    round also gets its rate ``gflops``; the plain cell, its best round's rate and batch sizes."""
    row: Dict[str, Any] = {"system": system, "model": model, "rounds": len(rounds), **meta}
    for key in ("seconds", "train", "server"):
        if rounds and key in rounds[0]:
            values = [r[key] for r in rounds]
            row[key] = _summary(values)
            row["round_seconds" if key == "seconds" else f"{key}_seconds"] = values
    if system == "plain":
        best = max(rounds, key=lambda r: r["gflops"])
        row.update(gflops=best["gflops"], batch=best["batch"], batch_gflops=best["batch_gflops"])
    elif flops:
        row.update(flops=flops, gflops=flops / row["seconds"] / 1e9)
    return row


def _echo(row: Dict[str, Any]) -> None:
    split = f"  (train {row['train']:.3f} + server {row['server']:.3f})" if "train" in row else ""
    rate = f"  {row['gflops']:.1f} GFLOP/s" if "gflops" in row else ""
    print(f"{row['model']:>4} {row['system']:>9}: {row['seconds']:8.3f} s/round{split}{rate}  "
          f"rounds {', '.join(f'{s:.3f}' for s in row['round_seconds'])}", flush=True)


def run_benchmark(models: Sequence[str] = MODELS, *, rounds: Dict[str, int], clients: int = 100, threads: int = 2,
                  seed: int = 0, workdir: Path, loader: str = "batched", samples_per_client: Optional[int] = None,
                  rnn_windows: int = 100, fedml_model: str = "fedml",
                  plain_batches: Optional[Dict[str, Sequence[int]]] = None, plain_seconds: float = PLAIN_SECONDS,
                  in_process: bool = False, echo: bool = False) -> List[Dict[str, Any]]:
    """Every (model, system) cell. Default: one worker process per cell, rounds interleaved
    (:func:`_interleaved`); ``in_process``: the cells one after the other in this process."""
    rows: List[Dict[str, Any]] = []
    plain_batches = plain_batches or PLAIN_BATCHES
    for model in models:
        kwargs = dict(clients=clients, rounds=rounds[model], threads=threads, seed=seed, workdir=Path(workdir),
                      loader=loader, samples_per_client=samples_per_client, rnn_windows=rnn_windows,
                      fedml_model=fedml_model, plain_batches=plain_batches.get(model), plain_seconds=plain_seconds)
        if in_process:
            cells = [run_cell(system, model, **kwargs) for system in SYSTEMS[model]]
        else:
            try:
                cells = _interleaved(model, echo=echo, **kwargs)
            except RuntimeError as exc:
                print(f"{model}: failed: {exc}", file=sys.stderr)
                continue
        for row in cells:
            rows.append(row)
            if echo:
                _echo(row)
    return rows


def _interleaved(model: str, *, clients: int, rounds: int, threads: int, seed: int, workdir: Path, loader: str,
                 samples_per_client: Optional[int], rnn_windows: int, fedml_model: str,
                 plain_batches: Optional[Sequence[int]], plain_seconds: float, echo: bool = False) -> List[Dict[str, Any]]:
    """The cells of one model, back to back: each cell runs in its own worker process (set up in parallel,
    untimed); round r of every cell runs before round r + 1 of any, one worker computing at a time, in an
    order rotated each round, so that a change in the machine's load hits all cells alike."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "FEDML_HETEROFL_QUIET": "1"}
    systems = SYSTEMS[model]
    procs: Dict[str, subprocess.Popen] = {}
    logs: Dict[str, Path] = {}
    timed: Dict[str, List[Dict[str, Any]]] = {s: [] for s in systems}
    flops: Dict[str, Optional[float]] = {}
    try:
        for system in systems:
            cmd = [sys.executable, __file__, "--worker", system, model, "--clients", str(clients), "--rounds",
                   str(rounds), "--threads", str(threads), "--seed", str(seed), "--workdir", str(workdir),
                   "--fedml-loader", loader, "--rnn-windows", str(rnn_windows), "--fedml-model", fedml_model,
                   "--plain-seconds", str(plain_seconds)]
            if samples_per_client is not None:
                cmd += ["--samples-per-client", str(samples_per_client)]
            if plain_batches:
                cmd += ["--plain-batches", *map(str, plain_batches)]
            logs[system] = workdir / f"worker_{system}_{model}.log"
            with open(logs[system], "w") as err:
                procs[system] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                                 text=True, env=env)
        for system in systems:
            flops[system] = _message(procs[system], logs[system]).get("flops")  # set-up done
        for r in range(rounds):
            for system in systems[r % len(systems):] + systems[:r % len(systems)]:
                proc = procs[system]
                proc.stdin.write("go\n")
                proc.stdin.flush()
                timed[system].append(_message(proc, logs[system]))
                if echo:
                    print(f"  {model} round {r}: {system} {timed[system][-1]['seconds']:.3f} s", flush=True)
                if r == rounds - 1 and proc.wait() != 0:
                    raise RuntimeError(f"{system} {model}: worker exited with {proc.returncode}\n"
                                       + logs[system].read_text()[-3000:])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [cell_row(system, model, timed[system], threads=threads, flops=flops[system]) for system in systems]


def _message(proc: subprocess.Popen, log_path: Path) -> Dict[str, Any]:
    """The worker's next :class:`Gate` message (other stdout lines are skipped)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"worker exited with {proc.returncode} before reporting\n"
                               + log_path.read_text()[-3000:])
        if line.startswith(Gate.MARK):
            return json.loads(line[len(Gate.MARK):])


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _cells(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    cells: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(r["model"], {})[r["system"]] = r
    return cells


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
    """model | peer | peer s/round | ours FedAvg s/round | speed-up | ours HeteroFL s/round | HeteroFL/FedAvg |
    our FedAvg GFLOP/s | plain step's best GFLOP/s (batch) | ours / plain."""
    lines = ["| model | peer | peer s/round | ours FedAvg s/round | speed-up (peer/ours) | ours HeteroFL s/round "
             "| HeteroFL/FedAvg | ours GFLOP/s | plain step GFLOP/s (batch) | ours/plain |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def sec(r: Optional[Dict[str, Any]]) -> str:
        return f"{r['seconds']:.3f}" if r else "-"

    for model, c in _cells(rows).items():
        peer_name = SYSTEMS[model][0]
        pe, fa, hf, pl = c.get(peer_name), c.get("fedavg"), c.get("heterofl"), c.get("plain")
        speed = f"{pe['seconds'] / fa['seconds']:.2f}x" if pe and fa else "-"
        over = f"{hf['seconds'] / fa['seconds']:.2f}x" if hf and fa else "-"
        rate = f"{fa['gflops']:.1f}" if fa and "gflops" in fa else "-"
        plain = f"{pl['gflops']:.1f} ({pl['batch']})" if pl else "-"
        frac = f"{fa['gflops'] / pl['gflops']:.0%}" if fa and pl and "gflops" in fa else "-"
        lines.append(f"| {model} | {peer_name} | {sec(pe)} | {sec(fa)} | {speed} | {sec(hf)} | {over} | {rate} | {plain} "
                     f"| {frac} |")
    return "\n".join(lines)


def split_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Our rounds split into local training and the server step (medians, seconds), with each round cell's
    FLOP rate; the plain step's rate per batch size."""
    lines = ["| model | system | train s | server s | round s | GFLOP/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        rate = f"{r['gflops']:.1f}" if "gflops" in r else "-"
        if "train" in r:
            lines.append(f"| {r['model']} | {r['system']} | {r['train']:.3f} | {r['server']:.3f} | {r['seconds']:.3f} "
                         f"| {rate} |")
        elif r["system"] == "plain":
            per = ", ".join(f"batch {b}: {g:.1f}" for b, g in r["batch_gflops"].items())
            lines.append(f"| {r['model']} | plain step | - | - | - | {per} |")
        else:
            lines.append(f"| {r['model']} | {r['system']} | - | - | {r['seconds']:.3f} | {rate} |")
    return "\n".join(lines)


def verdicts(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per (model, target): the ratio, whether the target is met and, where it is not, the measured
    limit."""
    out = []
    for model, c in _cells(rows).items():
        peer_name = SYSTEMS[model][0]
        pe, fa, hf, pl = c.get(peer_name), c.get("fedavg"), c.get("heterofl"), c.get("plain")
        if pe and fa:
            s, target = pe["seconds"] / fa["seconds"], SPEEDUP_TARGET[model]
            line = (f"{model}: our FedAvg round is {s:.2f}x faster than {peer_name} (target >= {target:g}x): "
                    f"{'MET' if s >= target else 'NOT MET'}")
            if s < target and pl and "gflops" in pe:
                bound = pl["gflops"] / pe["gflops"]
                line += (f"; limit: {peer_name} already trains at {pe['gflops']:.1f} GFLOP/s and a plain training "
                         f"step of this model at its best batch ({pl['batch']}) at {pl['gflops']:.1f} GFLOP/s, so "
                         f"this round's {pe['flops'] / 1e12:.2f} TFLOP cannot run more than {bound:.2f}x faster "
                         f"than {peer_name} here")
            out.append(line)
        if model == "cnn" and fa and pl and "gflops" in fa:
            f = fa["gflops"] / pl["gflops"]
            line = (f"{model}: our FedAvg round trains at {fa['gflops']:.1f} GFLOP/s, {f:.0%} of the plain step's "
                    f"best {pl['gflops']:.1f} GFLOP/s (target >= {ROOFLINE_TARGET:.0%}): "
                    f"{'MET' if f >= ROOFLINE_TARGET else 'NOT MET'}")
            out.append(line)
        if hf and fa:
            o = hf["seconds"] / fa["seconds"]
            out.append(f"{model}: our HeteroFL round is {o:.2f}x our FedAvg round (target <= {OVERHEAD_TARGET:g}x): "
                       f"{'MET' if o <= OVERHEAD_TARGET else 'NOT MET'}")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--rounds", type=int, default=6, help="rounds per LR cell (the first is a warm-up)")
    p.add_argument("--cnn-rounds", type=int, default=2, help="rounds per CNN cell (the first is a warm-up)")
    p.add_argument("--rnn-rounds", type=int, default=2, help="rounds per RNN cell (the first is a warm-up)")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rnn-windows", type=int, default=100, help="Shakespeare windows per speaker (80 %% for training)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fedml-loader", choices=("batched", "dataloader"), default="batched",
                   help="FedML's client data: pre-batched lists (as FedML's MNIST loader) or our DataLoaders")
    p.add_argument("--fedml-model", choices=("fedml", "ours"), default="fedml",
                   help="the CNN FedML sp trains: its own CNN_DropOut, or our CNN class (the round loops alone)")
    p.add_argument("--samples-per-client", type=int, default=None, help="cut each partition (smoke runs only)")
    p.add_argument("--plain-seconds", type=float, default=PLAIN_SECONDS, help="seconds per plain-step batch size")
    p.add_argument("--plain-batches", type=int, nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 clients of 8 samples, 1 round per cell")
    p.add_argument("--workdir", help="keep FedML's home and our run folders here (default: a temporary folder)")
    p.add_argument("--worker", nargs=2, metavar=("SYSTEM", "MODEL"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    for key in ("rounds", "cnn_rounds", "rnn_rounds", "clients", "threads", "rnn_windows"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.plain_seconds < 0:
        p.error("--plain-seconds must be >= 0")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if args.worker:
        system, model = args.worker
        protocol, sys.stdout = sys.stdout, sys.stderr  # stdout carries only the gate's messages
        run_cell(system, model, clients=args.clients, rounds=args.rounds, threads=args.threads, seed=args.seed,
                 workdir=Path(args.workdir), loader=args.fedml_loader, samples_per_client=args.samples_per_client,
                 rnn_windows=args.rnn_windows, fedml_model=args.fedml_model, plain_batches=args.plain_batches,
                 plain_seconds=args.plain_seconds, gate=Gate(sys.stdin, protocol))
        return 0

    rounds = {"lr": args.rounds, "cnn": args.cnn_rounds, "rnn": args.rnn_rounds}
    plain_batches = PLAIN_BATCHES
    if args.quick:
        args.clients, args.samples_per_client, args.plain_seconds = (QUICK["clients"], QUICK["samples_per_client"],
                                                                     QUICK["plain_seconds"])
        rounds = {m: QUICK["rounds"] for m in MODELS}
        plain_batches = QUICK["plain_batches"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_rounds_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        print(f"{args.clients} clients (all per round), 1 epoch; MNIST batch 32, Shakespeare batch 10 with at most "
              f"{args.rnn_windows} windows per speaker; {args.threads} threads, seed {args.seed}; rounds: "
              + ", ".join(f"{m} {rounds[m]}" for m in args.models)
              + f"; FedML loader: {args.fedml_loader}, FedML CNN: {args.fedml_model}; work folder {workdir}", flush=True)
        rows = run_benchmark(args.models, rounds=rounds, clients=args.clients, threads=args.threads, seed=args.seed,
                             workdir=workdir, loader=args.fedml_loader, samples_per_client=args.samples_per_client,
                             rnn_windows=args.rnn_windows, fedml_model=args.fedml_model, plain_batches=plain_batches,
                             plain_seconds=args.plain_seconds, echo=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print()
    print(markdown_table(rows))
    print()
    print(split_table(rows))
    print()
    print("\n".join(verdicts(rows)))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; load average at the end "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if len(rows) == sum(len(SYSTEMS[m]) for m in args.models) else 1


if __name__ == "__main__":
    sys.exit(main())
