"""MPI backend at scale: seconds per round and memory per rank, standalone vs 2, 3, 5, 9 processes.

    .venv/bin/python benchmarks/mpi_scale.py                       # LR and CNN, -np 2 3 5 9
    .venv/bin/python benchmarks/mpi_scale.py --models lr --np 5 21 --per-round 10 --rounds 30

Every cell is a real run of ``fedml-heterofl run`` on the same MNIST workload — 100 clients (Dirichlet
q = 0.2), HeteroFL against Min-Max with 20 fixed attackers (``--attackers``; the README's paper-scale
line), evaluated
after every round; the CNN with ``max_samples_per_client`` (default 50) — once standalone (one
process) and once per ``mpirun -np N`` (a server and N-1 workers), one after another, every process
with ``OMP_NUM_THREADS=1`` (``--threads``), so the runs compare processes, not threads. The dataset's
memory-mapped cache is built before any cell.

Measured (from outside: this process samples ``/proc`` of every rank every 0.1 s):

* s/round: median over the rounds after the first of the run's own ``time_train + time_server +
  time_eval`` (MPI: from the end of one aggregation to the end of the next, i.e. training,
  communication and FedML's bookkeeping included); × standalone: that over the standalone s/round.
* peak RSS: the kernel's ``VmHWM`` of the server (rank 0) and of the largest worker; private: the
  largest sampled ``RssAnon`` (memory no other process shares); job PSS: the largest sampled sum of
  every rank's proportional set size, i.e. the physical memory the whole job held at once (shared
  library pages counted once).
* |Δacc|: the largest difference of a round's test accuracy from the standalone run's.
* floors, measured in the same run: a process that only imports torch, and one that imports
  fedml_heterofl's FedML bridge and initialises MPI — what every rank costs before it holds any data.

Printed: a Markdown table, then the targets (worker peak RSS <= 500 MB, server <= 1.5 GB, each also
above the import floor) with MET / NOT MET.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MPIRUN = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
FLOORS = {
    "import torch": "import torch",
    "import fedml + MPI": "import fedml_heterofl.fedml_bridge\nfrom mpi4py import MPI\nMPI.COMM_WORLD.Barrier()",
}
TARGETS_MB = {"worker": 500, "server": 1500}


def bench_config(model: str, *, clients: int, per_round: int, attackers: int, rounds: int, samples: Optional[int],
                 results: Path, mpi: bool) -> Dict[str, Any]:
    """``config/mnist_lr.yaml`` (or its CNN twin) with the benchmark's sizes."""
    cfg = yaml.safe_load(open(ROOT / "config" / "mnist_lr.yaml"))
    cfg["common_args"].update(results_dir=str(results), training_type="cross_silo" if mpi else "simulation")
    cfg["comm_args"]["backend"] = "MPI" if mpi else "single_process"
    cfg["model_args"]["model"] = model
    cfg["data_args"]["max_samples_per_client"] = samples
    cfg["train_args"].update(client_num_in_total=clients, client_num_per_round=per_round, comm_round=rounds)
    cfg["attack_args"]["byzantine_client_num"] = attackers
    cfg["validation_args"]["frequency_of_the_test"] = 1
    return cfg


def _read(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode(errors="ignore")


def _status(pid: int) -> Dict[str, int]:
    """``VmHWM``, ``RssAnon`` (from status) and ``Pss`` (from smaps_rollup) of a process, in kB."""
    out = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "RssAnon"):
            out[key] = int(line.split()[1])
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1])
    return out


def _descendants(root: int) -> List[int]:
    parent: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(_read(f"/proc/{entry}/stat").rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parent.items() if pp == pid]
        found.extend(children)
        frontier.extend(children)
    return found


def measure(cmd: List[str], env: Dict[str, str], interval: float = 0.1) -> Dict[str, Any]:
    """Run ``cmd``, sampling the memory of its python processes; per rank (``None``: not an MPI rank)
    the peaks, and the peak of the summed PSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ranks: Dict[Any, Dict[str, int]] = {}
    total = {"peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pss = 0
            for pid in [proc.pid] + _descendants(proc.pid):
                try:
                    if "python" not in _read(f"/proc/{pid}/cmdline"):
                        continue
                    env_vars = _read(f"/proc/{pid}/environ").split("\0")
                    rank = next((int(v.split("=")[1]) for v in env_vars if v.startswith("OMPI_COMM_WORLD_RANK=")),
                                None)
                    now = _status(pid)
                except (OSError, ValueError):
                    continue
                peak = ranks.setdefault(rank, {"VmHWM": 0, "RssAnon": 0, "Pss": 0})
                for key, value in now.items():
                    peak[key] = max(peak[key], value)
                pss += now.get("Pss", 0)
            total["peak"] = max(total["peak"], pss)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return {"ranks": ranks, "job_pss_kb": total["peak"], "wall": time.perf_counter() - start, "stdout": stdout}


def _rows(run_root: Path) -> List[Dict[str, str]]:
    run = next(p for p in run_root.iterdir() if p.is_dir())
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def seconds_per_round(rows: List[Dict[str, str]]) -> float:
    times = [float(r["time_train"]) + float(r["time_server"]) + float(r["time_eval"]) for r in rows]
    return statistics.median(times[1:] if len(times) > 1 else times)


def run_cell(model: str, np_: Optional[int], args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    name = f"{model}_np{np_}" if np_ else f"{model}_standalone"
    results = workdir / name
    samples = args.cnn_samples if model == "cnn" else None
    rounds = args.cnn_rounds if model == "cnn" else args.rounds
    cfg = bench_config(model, clients=args.clients, per_round=args.per_round, attackers=args.attackers, rounds=rounds,
                       samples=samples, results=results, mpi=np_ is not None)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, FEDML_HETEROFL_QUIET="1", PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "fedml_heterofl", "run", "--cf", str(path), "--no-progress"]
    env["OMP_NUM_THREADS"] = str(args.threads)
    if np_ is not None:
        cmd = [*MPIRUN, "-np", str(np_), *cmd]
    out = measure(cmd, env)
    rows = _rows(results)
    kb = out["ranks"]
    workers = [v for r, v in kb.items() if r not in (None, 0)]
    server = kb.get(0, kb.get(None))
    return {"model": model, "np": np_, "rows": rows, "seconds": seconds_per_round(rows), "wall": out["wall"],
            "server": server, "worker": {k: max(w[k] for w in workers) for k in server} if workers else None,
            "job_pss_kb": out["job_pss_kb"]}


def floors(workdir: Path) -> Dict[str, Dict[str, int]]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    out = {}
    for name, code in FLOORS.items():
        script = workdir / "floor.py"
        script.write_text(code + "\nimport time\ntime.sleep(1.0)\n")  # stay alive for a few samples
        out[name] = measure([*MPIRUN, "-np", "1", sys.executable, str(script)], env)["ranks"][0]
    return out


def mb(kb: Optional[int]) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def markdown_table(cells: List[Dict[str, Any]], floor: Dict[str, Dict[str, int]]) -> str:
    lines = ["| model | processes | s/round | × standalone | max \\|Δacc\\| | server peak RSS MB | worker peak RSS MB "
             "| server private MB | worker private MB | job PSS MB | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {c["model"]: c for c in cells if c["np"] is None}
    for c in cells:
        ref = base[c["model"]]
        dacc = max(abs(float(a["test_acc"]) - float(b["test_acc"])) for a, b in zip(c["rows"], ref["rows"]))
        w = c["worker"]
        lines.append(f"| {c['model']} | {c['np'] or '1 (standalone)'} | {c['seconds']:.3f} | "
                     f"{c['seconds'] / ref['seconds']:.2f} | {dacc:.4f} | {mb(c['server']['VmHWM'])} | "
                     f"{mb(w and w['VmHWM'])} | {mb(c['server']['RssAnon'])} | {mb(w and w['RssAnon'])} | "
                     f"{mb(c['job_pss_kb'])} | {c['wall']:.0f} |")
    for name, kb in floor.items():
        lines.append(f"| floor: {name} | 1 | | | | {mb(kb['VmHWM'])} | | {mb(kb['RssAnon'])} | | {mb(kb['Pss'])} | |")
    return "\n".join(lines)


def verdicts(cells: List[Dict[str, Any]], floor: Dict[str, Dict[str, int]]) -> List[str]:
    base = floor["import fedml + MPI"]["VmHWM"]
    out = []
    for c in cells:
        if c["np"] is None:
            continue
        for role in ("server", "worker"):
            peak = c[role]["VmHWM"]
            limit = TARGETS_MB[role] * 1024
            out.append(f"{c['model']} -np {c['np']} {role}: peak RSS {mb(peak)} MB (target <= {TARGETS_MB[role]}): "
                       f"{'MET' if peak <= limit else 'NOT MET'}; above the import floor {mb(peak - base)} MB: "
                       f"{'MET' if peak - base <= limit else 'NOT MET'}")
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lr", "cnn"], choices=["lr", "cnn"])
    parser.add_argument("--np", nargs="+", type=int, default=[2, 3, 5, 9], dest="nps")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=None, help="clients per round (default: all)")
    parser.add_argument("--attackers", type=int, default=20, help="fixed Min-Max attackers (HeteroFL: below half "
                        "the clients per round)")
    parser.add_argument("--rounds", type=int, default=5, help="LR rounds")
    parser.add_argument("--cnn-rounds", type=int, default=3)
    parser.add_argument("--cnn-samples", type=int, default=50, help="CNN: max_samples_per_client")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process, the "
                        "standalone one included (default 1: the runs compare processes, not threads)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    args.per_round = args.per_round or args.clients
    from fedml_heterofl.data.cache import DatasetCache

    DatasetCache("mnist").build()  # once, before any cell (a first MPI run builds it itself)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mpi_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    floor = floors(workdir)
    cells = []
    for model in args.models:
        for np_ in [None, *args.nps]:
            cells.append(run_cell(model, np_, args, workdir))
            c = cells[-1]
            print(f"{model} {'standalone' if np_ is None else f'-np {np_}'}: {c['seconds']:.3f} s/round, "
                  f"wall {c['wall']:.0f} s", file=sys.stderr, flush=True)
    print(f"MNIST, {args.clients} clients ({args.per_round} per round), HeteroFL vs Min-Max (f = {args.attackers}); LR "
          f"{args.rounds} rounds, CNN {args.cnn_rounds} rounds with {args.cnn_samples} samples per client; "
          f"{args.threads} thread(s) per process\n")
    print(markdown_table(cells, floor))
    print()
    print("\n".join(verdicts(cells, floor)))
    (workdir / "mpi_scale.json").write_text(json.dumps(
        [{k: v for k, v in c.items() if k != "rows"} for c in cells], indent=1))


if __name__ == "__main__":
    main()
