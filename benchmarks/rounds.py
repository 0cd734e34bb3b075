"""Round-time benchmark: our standalone FedAvg and HeteroFL rounds against FedML 0.9.6's ``backend: sp`` FedAvg.

Same work on every side: real MNIST, the paper-scale settings of ``config/mnist_lr.yaml`` (100 clients,
all taking part every round, Dirichlet q = 0.2 partition, 1 local epoch, batch 32, SGD; the CNN takes
its learning rate from ``config/fashion_mnist_cnn.yaml``), the same seed and therefore the same
partition, and the same model classes (``fedml_heterofl.models``: FedML's layer shapes). No attack.

Three systems per model, each in its own worker process (FedML's ``init`` seeds and patches
process-wide state; each cell's memory and thread pool are its own), with
``torch.set_num_threads(--threads)``. The workers set up in parallel (untimed), then their rounds are
interleaved: round r of every system runs before round r + 1 of any, one worker computing at a time
while the others wait, in an order rotated each round, so that a change in the machine's background
load hits all three systems alike:

* ``fedml_sp``: FedML 0.9.6's ``FedAvgAPI(args, device, dataset, model).train()`` (``backend: sp``),
  initialised offline by :func:`fedml_heterofl.fedml_bridge.offline.init` with its home in the
  work folder. Its dataset is :func:`fedml_heterofl.fedml_bridge.convert.fedml_dataset` of our
  workload, i.e. exactly our partition; each client's ``DataLoader`` is materialised once, before
  timing, into a list of ``(x, y)`` batches, which is what FedML's own MNIST loader
  (``fedml.data.MNIST.data_loader.batch_data``) hands its trainer (``--fedml-loader dataloader``
  keeps the ``DataLoader``, which adds per-sample indexing and collation to FedML's round).
* ``fedavg``: our standalone simulator, ``defense_args.enable_defense: false``.
* ``heterofl``: our standalone simulator, ``defense_type: heterofl`` with its default parameters; the
  model has the watermark output and every client also trains on the 4 trigger samples (part of
  HeteroFL's cost).

What a "round" is (the same accounting on both sides: client training + aggregation, no evaluation,
no checkpointing):

* FedML: ``FedAvgAPI.train`` evaluates every client on the whole test set at round 0, every
  ``frequency_of_the_test`` rounds and at the last round, inside its round loop. A subclass replaces
  the two evaluation methods by no-ops (a test frequency alone cannot skip round 0 or the last round)
  and times each round from ``_client_sampling`` (the first thing a round does) to the return of
  ``_aggregate`` (after which only ``load_state_dict`` of the new global model remains). The round
  loop itself (``deepcopy`` of the global state per client, ``Client.train``, FedML's aggregation)
  is FedML's own code, unchanged.
* Ours: ``time_train + time_server`` of each row of ``metrics.csv`` (local training of all clients,
  then poisoning (none here), the defense and the update of ``w``); ``time_eval`` and the
  checkpoint write are not counted, and the test frequency is set past the last round so only the
  last round evaluates.

Reported per cell: the median over the rounds after the first (warm-up: lazy imports, allocator
growth, ``vmap`` tracing); with one round, that round. ``--threads`` matters on a shared machine: with
other CPU-bound processes running, two intra-op threads per process oversubscribe the cores and every
small parallel operation waits for a descheduled thread (FedML's 1,900 small SGD steps per LR round
suffer most); ``--threads 1`` measures the code rather than the scheduler there. Per-round lists and
our train/server split go to ``--json``. FedML's home, its outputs, our run folders and the workers'
logs go to a temporary folder (``--workdir`` to keep them), never the repository.

Targets (issue): our FedAvg round >= 3x faster than FedML's sp round; our HeteroFL round <= 1.25x our
FedAvg round, both on 2 cores. Timings move with other load on the machine; the ratios come from
one run, its systems' rounds interleaved.

Usage: ``python benchmarks/rounds.py [--models lr cnn] [--rounds 6] [--cnn-rounds 2] [--threads 2]
[--clients 100] [--json out.json]``
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
import time
from pathlib import Path
from statistics import median
from typing import IO, Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml

log = logging.getLogger("benchmarks.rounds")

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("fedml_sp", "fedavg", "heterofl")
MODELS = ("lr", "cnn")
#: the issue's targets: FedML sp / our FedAvg >= SPEEDUP_TARGET; our HeteroFL / our FedAvg <= OVERHEAD_TARGET
SPEEDUP_TARGET = 3.0
OVERHEAD_TARGET = 1.25


# ---------------------------------------------------------------------------------------------
# settings and workload
# ---------------------------------------------------------------------------------------------

def bench_config(system: str, model: str, *, clients: int, rounds: int, seed: int) -> Dict[str, Any]:
    """The FedML-style config of one cell: ``config/mnist_lr.yaml`` with the model, client count, round
    count, seed, no attack, and the defense of ``system`` (FedAvg for ``fedml_sp``)."""
    cfg = yaml.safe_load((REPO / "config" / "mnist_lr.yaml").read_text())
    if model == "cnn":  # the CNN's learning rate as in its own config (timing does not depend on it)
        cnn = yaml.safe_load((REPO / "config" / "fashion_mnist_cnn.yaml").read_text())
        cfg["train_args"]["learning_rate"] = cnn["train_args"]["learning_rate"]
    cfg["common_args"].update(random_seed=seed, run_name=f"bench_{system}_{model}")
    cfg["data_args"]["dataset"] = "mnist"
    cfg["model_args"]["model"] = model
    cfg["train_args"].update(client_num_in_total=clients, client_num_per_round=clients, comm_round=rounds)
    cfg["validation_args"]["frequency_of_the_test"] = rounds + 1  # only the (untimed) last-round evaluation
    cfg["attack_args"] = {"enable_attack": False, "byzantine_client_num": 0}
    if system == "heterofl":
        cfg["defense_args"] = {"enable_defense": True, "defense_type": "heterofl", "defense_params": {}}
    else:
        cfg["defense_args"] = {"enable_defense": False}
    return cfg


def _truncate(work, samples_per_client: Optional[int]):
    """The workload with each client's partition cut to its first ``samples_per_client`` rows (for
    smoke tests; trigger rows, when present, stay). ``None`` leaves it unchanged."""
    if samples_per_client is None:
        return work
    parts = [ix[:samples_per_client] for ix in work.parts]
    index = [torch.cat([p, ci[len(full):]]) for p, full, ci in zip(parts, work.parts, work.client_index)]
    return dataclasses.replace(work, parts=parts, client_index=index)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _summary(times: Sequence[float]) -> float:
    """Median per-round seconds after the warm-up round (the only round when there is one)."""
    return median(times[1:]) if len(times) > 1 else times[0]


# ---------------------------------------------------------------------------------------------
# one cell
# ---------------------------------------------------------------------------------------------

class Gate:
    """Hand-off between a cell and the parent process, so that only one cell computes at a time.

    The cell calls :meth:`wait` before each round starts, :meth:`report` once a round's times are known
    and :meth:`close` at the end. A round's times are sent when the cell next waits (or closes), i.e.
    when the cell is idle; before the first round an empty message says the set-up is done. Without
    streams (in-process runs) it only records the rounds.
    """

    MARK = "@@bench "

    def __init__(self, stream_in: Optional[IO[str]] = None, stream_out: Optional[IO[str]] = None) -> None:
        self.rounds: List[Dict[str, float]] = []
        self._in, self._out = stream_in, stream_out
        self._pending: Dict[str, float] = {}

    def report(self, times: Dict[str, float]) -> None:
        self.rounds.append(times)
        self._pending = times

    def _send(self) -> None:
        if self._out is not None:
            self._out.write(self.MARK + json.dumps(self._pending) + "\n")
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


def _run_fedml(model: str, gate: Gate, *, clients: int, rounds: int, seed: int, workdir: Path, loader: str,
               samples_per_client: Optional[int]) -> None:
    from fedml_heterofl.fedml_bridge import offline
    from fedml_heterofl.settings import settings_from_dict
    from fedml_heterofl.fedml_bridge.convert import fedml_dataset
    from fedml_heterofl.simulation.workload import build_workload

    settings = settings_from_dict(bench_config("fedml_sp", model, clients=clients, rounds=rounds, seed=seed))
    work = _truncate(build_workload(settings), samples_per_client)
    run_dir = workdir / f"bench_fedml_sp_{model}"
    args = settings.to_fedml_args()
    args.backend = "sp"
    args = offline.init(args, run_dir)
    dataset = fedml_dataset(work, settings.train_args.batch_size)
    if loader == "batched":  # as FedML's own MNIST loader: a list of (x, y) batches per client
        dataset[5] = {i: [(x, y) for x, y in dl] for i, dl in dataset[5].items()}
    api = _timed_fedavg_api()(args, torch.device("cpu"), dataset, copy.deepcopy(work.model))
    api.gate = gate
    with offline.fedml_home(run_dir):
        api.train()


def _run_ours(system: str, model: str, gate: Gate, *, clients: int, rounds: int, seed: int, workdir: Path,
              samples_per_client: Optional[int]) -> None:
    from fedml_heterofl.settings import settings_from_dict
    from fedml_heterofl.simulation.runner import Simulation
    from fedml_heterofl.simulation.workload import build_workload

    settings = settings_from_dict(bench_config(system, model, clients=clients, rounds=rounds, seed=seed))
    work = _truncate(build_workload(settings), samples_per_client)
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


def run_cell(system: str, model: str, *, clients: int = 100, rounds: int = 3, threads: int = 2, seed: int = 0,
             workdir: Path, loader: str = "batched", samples_per_client: Optional[int] = None,
             gate: Optional[Gate] = None) -> Dict[str, Any]:
    """Time ``rounds`` rounds of one system on one model in this process; returns the cell's row.
    With a ``gate`` wired to a parent, each round starts only when the parent says so."""
    if system not in SYSTEMS:
        raise ValueError(f"system: {system!r}; allowed: {', '.join(SYSTEMS)}")
    gate = gate if gate is not None else Gate()
    torch.set_num_threads(threads)
    _seed_all(seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(clients=clients, rounds=rounds, seed=seed, workdir=workdir, samples_per_client=samples_per_client)
    if system == "fedml_sp":
        _run_fedml(model, gate, loader=loader, **kwargs)
    else:
        _run_ours(system, model, gate, **kwargs)
    gate.close()
    if len(gate.rounds) != rounds:
        raise RuntimeError(f"{system} {model}: {len(gate.rounds)} rounds timed, expected {rounds}")
    return cell_row(system, model, gate.rounds, threads=threads)


def cell_row(system: str, model: str, rounds: Sequence[Dict[str, float]], **meta: Any) -> Dict[str, Any]:
    """A cell's row: per-round lists and their summaries (:func:`_summary`)."""
    row: Dict[str, Any] = {"system": system, "model": model, "rounds": len(rounds), **meta}
    for key in ("seconds", "train", "server"):
        if rounds and key in rounds[0]:
            values = [r[key] for r in rounds]
            row[key] = _summary(values)
            row["round_seconds" if key == "seconds" else f"{key}_seconds"] = values
    return row


def _echo(row: Dict[str, Any]) -> None:
    split = f"  (train {row['train']:.3f} + server {row['server']:.3f})" if "train" in row else ""
    print(f"{row['model']:>4} {row['system']:>9}: {row['seconds']:8.3f} s/round{split}  "
          f"rounds {', '.join(f'{s:.3f}' for s in row['round_seconds'])}", flush=True)


def run_benchmark(models: Sequence[str] = MODELS, *, rounds: Dict[str, int], clients: int = 100, threads: int = 2,
                  seed: int = 0, workdir: Path, loader: str = "batched", samples_per_client: Optional[int] = None,
                  in_process: bool = False, echo: bool = False) -> List[Dict[str, Any]]:
    """Every (model, system) cell. Default: one worker process per system and model, rounds interleaved
    (:func:`_interleaved`); ``in_process``: the cells one after the other in this process."""
    rows: List[Dict[str, Any]] = []
    for model in models:
        kwargs = dict(clients=clients, rounds=rounds[model], threads=threads, seed=seed, workdir=Path(workdir),
                      loader=loader, samples_per_client=samples_per_client)
        if in_process:
            cells = [run_cell(system, model, **kwargs) for system in SYSTEMS]
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
                 samples_per_client: Optional[int], echo: bool = False) -> List[Dict[str, Any]]:
    """The three systems' rounds of one model, back to back: each system runs in its own worker process
    (set up in parallel, untimed); round r of every system runs before round r + 1 of any, one worker
    computing at a time, in an order rotated each round, so that a change in the machine's load hits all
    three alike."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "FEDML_HETEROFL_QUIET": "1"}
    procs: Dict[str, subprocess.Popen] = {}
    logs: Dict[str, Path] = {}
    timed: Dict[str, List[Dict[str, float]]] = {s: [] for s in SYSTEMS}
    try:
        for system in SYSTEMS:
            cmd = [sys.executable, __file__, "--worker", system, model, "--clients", str(clients), "--rounds",
                   str(rounds), "--threads", str(threads), "--seed", str(seed), "--workdir", str(workdir),
                   "--fedml-loader", loader]
            if samples_per_client is not None:
                cmd += ["--samples-per-client", str(samples_per_client)]
            logs[system] = workdir / f"worker_{system}_{model}.log"
            with open(logs[system], "w") as err:
                procs[system] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                                 text=True, env=env)
        for system in SYSTEMS:
            _message(procs[system], logs[system])  # set-up done
        for r in range(rounds):
            for system in SYSTEMS[r % len(SYSTEMS):] + SYSTEMS[:r % len(SYSTEMS)]:
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
    return [cell_row(system, model, timed[system], threads=threads) for system in SYSTEMS]


def _message(proc: subprocess.Popen, log_path: Path) -> Dict[str, float]:
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
    """model | FedML sp FedAvg s/round | ours FedAvg s/round | speed-up | ours HeteroFL s/round | HeteroFL/FedAvg."""
    lines = ["| model | FedML sp FedAvg s/round | ours FedAvg s/round | speed-up (FedML/ours) "
             "| ours HeteroFL s/round | HeteroFL/FedAvg |", "|---|---|---|---|---|---|"]

    def sec(r: Optional[Dict[str, Any]]) -> str:
        return f"{r['seconds']:.3f}" if r else "-"

    for model, c in _cells(rows).items():
        fm, fa, hf = c.get("fedml_sp"), c.get("fedavg"), c.get("heterofl")
        speed = f"{fm['seconds'] / fa['seconds']:.1f}x" if fm and fa else "-"
        over = f"{hf['seconds'] / fa['seconds']:.2f}x" if hf and fa else "-"
        lines.append(f"| {model} | {sec(fm)} | {sec(fa)} | {speed} | {sec(hf)} | {over} |")
    return "\n".join(lines)


def split_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Our rounds split into local training and the server step (medians, seconds)."""
    lines = ["| model | system | train s | server s | round s |", "|---|---|---|---|---|"]
    for r in rows:
        if "train" in r:
            lines.append(f"| {r['model']} | {r['system']} | {r['train']:.3f} | {r['server']:.3f} | {r['seconds']:.3f} |")
    return "\n".join(lines)


def verdicts(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per (model, target): the ratio and whether the target is met."""
    out = []
    for model, c in _cells(rows).items():
        fm, fa, hf = c.get("fedml_sp"), c.get("fedavg"), c.get("heterofl")
        if fm and fa:
            s = fm["seconds"] / fa["seconds"]
            out.append(f"{model}: our FedAvg round is {s:.1f}x faster than FedML sp (target >= {SPEEDUP_TARGET:g}x): "
                       f"{'MET' if s >= SPEEDUP_TARGET else 'NOT MET'}")
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
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fedml-loader", choices=("batched", "dataloader"), default="batched",
                   help="FedML's client data: pre-batched lists (as FedML's MNIST loader) or our DataLoaders")
    p.add_argument("--samples-per-client", type=int, default=None, help="cut each partition (smoke runs only)")
    p.add_argument("--workdir", help="keep FedML's home and our run folders here (default: a temporary folder)")
    p.add_argument("--worker", nargs=2, metavar=("SYSTEM", "MODEL"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    for key in ("rounds", "cnn_rounds", "clients", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if args.worker:
        system, model = args.worker
        protocol, sys.stdout = sys.stdout, sys.stderr  # stdout carries only the gate's messages
        run_cell(system, model, clients=args.clients, rounds=args.rounds, threads=args.threads, seed=args.seed,
                 workdir=Path(args.workdir), loader=args.fedml_loader, samples_per_client=args.samples_per_client,
                 gate=Gate(sys.stdin, protocol))
        return 0

    rounds = {"lr": args.rounds, "cnn": args.cnn_rounds}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_rounds_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        print(f"MNIST, {args.clients} clients (all per round), 1 epoch, batch 32, {args.threads} threads, "
              f"seed {args.seed}; rounds: " + ", ".join(f"{m} {rounds[m]}" for m in args.models)
              + f"; FedML loader: {args.fedml_loader}; work folder {workdir}", flush=True)
        rows = run_benchmark(args.models, rounds=rounds, clients=args.clients, threads=args.threads, seed=args.seed,
                             workdir=workdir, loader=args.fedml_loader, samples_per_client=args.samples_per_client,
                             echo=True)
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
    return 0 if len(rows) == len(SYSTEMS) * len(args.models) else 1


if __name__ == "__main__":
    sys.exit(main())
