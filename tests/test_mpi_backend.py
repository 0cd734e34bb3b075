"""The MPI backend with worker ranks (several clients per process, client sampling, small ranks).

Pure pieces (client assignment, launch checks, FedML's silo view, GPU mapping, the dataset cache, a
worker's data) are checked directly; the worker trainer and the server aggregator are driven in one
process in FedML cross-silo's call order for 1, 3 and 5 workers with and without sampling and compared
with the standalone simulator; real ``mpirun`` jobs check the whole path, the launch errors and a
killed worker (``tests/test_fedml_bridge_mpi.py`` covers FedML's one-process-per-client shape).
"""
import functools
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings as hsettings, strategies as st

from fedml_heterofl.data import load_dataset
from fedml_heterofl.data.cache import DatasetCache
from fedml_heterofl.data.dataset import Dataset
from fedml_heterofl.fedml_bridge.aggregator import HeteroFLServerAggregator
from fedml_heterofl.fedml_bridge.args import fedml_args
from fedml_heterofl.fedml_bridge.convert import ClientUpdates
from fedml_heterofl.fedml_bridge.mpi import SiloView, rank_device
from fedml_heterofl.fedml_bridge.trainer import HeteroFLWorkerTrainer
from fedml_heterofl.settings import DeviceArgs, settings_from_dict
from fedml_heterofl.simulation.clients import assign_clients, vectorised
from fedml_heterofl.simulation.launch import check_launch, gpu_mapping, launch_problem
from fedml_heterofl.simulation.rounds import participants
from fedml_heterofl.simulation.runner import Simulation
from fedml_heterofl.simulation.workload import build_workload, client_plan, initial_model, server_data
from helpers import ROOT, mnist_lr_config, read_metrics

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
needs_mpirun = pytest.mark.skipif(subprocess.run(["which", "mpirun"], capture_output=True).returncode != 0,
                                  reason="mpirun not found (run/setup.sh installs OpenMPI)")


pytestmark = pytest.mark.usefixtures("fresh_fedml_singletons")  # tests/conftest.py


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def config(tmp_path, *, clients=10, per_round=10, rounds=3, attack="min_max", f=2, backend="single_process",
           **sections):
    """MNIST/LR, HeteroFL, small clients (60 samples each), evaluated after every round."""
    backend_args = {
        "common_args": {"training_type": "cross_silo" if backend == "MPI" else "simulation"},
        "comm_args": {"backend": backend},
        "data_args": {"max_samples_per_client": 60},
        "train_args": {"client_num_in_total": clients, "client_num_per_round": per_round, "comm_round": rounds,
                       "batch_size": 16, "vectorised_chunk": 4},
    }
    return mnist_lr_config(tmp_path / backend, attack, f, backend_args, sections)


# -- client assignment -------------------------------------------------------------------------

def test_assign_clients_hand_computed_case():
    # counts 5,4,3,3,1: 0 -> w0 (5); 1 -> w1 (4); 2 -> w1 (7); 3 -> w0 (8); 4 -> w1 (8)
    shares = assign_clients(torch.arange(5), torch.tensor([5.0, 4, 3, 3, 1]), 2)
    assert [s.tolist() for s in shares] == [[0, 3], [1, 2, 4]]
    assert [s.tolist() for s in assign_clients(torch.tensor([7, 2]), torch.ones(10), 4)] == [[2], [7], [], []]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        assign_clients(torch.arange(3), torch.ones(3), 0)


@hsettings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 500), min_size=1, max_size=40), workers=st.integers(1, 9), data=st.data())
def test_assign_clients_covers_each_client_once_and_balances_rows(counts, workers, data):
    n = len(counts)
    clients = torch.tensor(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    c = torch.tensor(counts, dtype=torch.float32)
    shares = assign_clients(clients, c, workers)
    assert len(shares) == workers
    assert sorted(torch.cat(shares).tolist()) == clients.tolist()
    assert all(s.tolist() == sorted(s.tolist()) for s in shares)
    loads = [float(c[s].sum()) for s in shares]
    # greedy list scheduling: the busiest worker exceeds the mean load by at most one client's rows
    assert max(loads) <= float(c[clients].sum()) / workers + float(c[clients].max()) + 1e-6
    assert [s.tolist() for s in assign_clients(clients, c, workers)] == [s.tolist() for s in shares]


# -- launch checks, FedML's view, GPU mapping --------------------------------------------------

def test_launch_problem_names_the_allowed_np(tmp_path):
    s = settings_from_dict(config(tmp_path, per_round=4, clients=10, f=1, backend="MPI"))
    assert all(launch_problem(s, n) is None for n in (2, 3, 4, 5))
    alone = launch_problem(s, 1)
    assert "mpirun -np N" in alone and "N from 2 to 5" in alone
    assert launch_problem(s, 6) == "mpirun -np 6 starts 5 workers for 4 clients per round; allowed -np: 2 to 5"
    check_launch(s, 0, 3)
    with pytest.raises(ValueError, match="allowed -np: 2 to 5"):
        check_launch(s, 0, 9)
    with pytest.raises(SystemExit) as other_rank:  # the other ranks leave quietly
        check_launch(s, 4, 9)
    assert other_rank.value.code == 2
    sim = settings_from_dict(config(tmp_path, per_round=4, f=1, backend="MPI",
                                    common_args={"training_type": "simulation"}))
    assert "training_type" in launch_problem(sim, 3) and "cross_silo" in launch_problem(sim, 3)


def test_gpu_mapping_places_processes_and_fixes_np(tmp_path):
    path = tmp_path / "gpu_mapping.yaml"
    path.write_text(yaml.safe_dump({"one_per_gpu": {"a": [2, 1], "b": [1, 1]}, "shared": {"a": [5]}}))
    assert gpu_mapping(path, "one_per_gpu") == [("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    with pytest.raises(ValueError, match="'nope' is not in"):
        gpu_mapping(path, "nope")
    s = settings_from_dict(config(tmp_path, per_round=4, f=1, backend="MPI", device_args={
        "using_gpu": True, "gpu_mapping_file": str(path), "gpu_mapping_key": "one_per_gpu"}))
    assert launch_problem(s, 5) is None
    assert launch_problem(s, 3).endswith("start it with mpirun -np 5")
    assert rank_device(DeviceArgs(), 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="rank 2 needs cuda:1"):
            rank_device(DeviceArgs(using_gpu=True, gpu_mapping_file=str(path), gpu_mapping_key="one_per_gpu"), 2)


def test_shipped_mpi_configs_and_gpu_mappings_fit_their_documented_np(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name config/gpu_mapping.yaml relative to the project
    assert [len(gpu_mapping("config/gpu_mapping.yaml", k)) for k in
            ("one_worker_per_gpu", "several_workers_per_gpu", "one_gpu")] == [9, 17, 5]
    for path in sorted(ROOT.glob("config/*_mpi.yaml")):
        cfg = yaml.safe_load(path.read_text())
        cpu = settings_from_dict(cfg)
        assert launch_problem(cpu, 5) is None and launch_problem(cpu, 2) is None, path.name
        cfg["device_args"]["using_gpu"] = True
        gpu = settings_from_dict(cfg)
        assert launch_problem(gpu, 9) is None and "mpirun -np 9" in launch_problem(gpu, 5), path.name


def test_silo_view_shows_fedml_the_workers_and_forwards_everything_else():
    args = Namespace(client_num_in_total=100, client_num_per_round=10, random_seed=3)
    view = SiloView(args, 4)
    assert (view.client_num_in_total, view.client_num_per_round, view.worker_num) == (4, 4, 4)
    assert view.random_seed == 3 and not hasattr(view, "rank")
    view.round_idx, view.rank = 7, 2  # what FedML sets is what the run's args hold
    assert (args.round_idx, args.rank) == (7, 2)
    assert (args.client_num_in_total, args.client_num_per_round) == (100, 10)
    del view.rank
    assert not hasattr(args, "rank")


def test_client_updates_payload_round_trip_and_shape_check():
    u = ClientUpdates(2, torch.tensor([4, 1]), torch.randn(2, 5), torch.tensor([3.0, 9.0]), torch.zeros(2, 0))
    payload = u.to_fedml()
    assert type(payload) is dict and ClientUpdates.is_payload(payload)  # FedML passes plain dicts on unchanged
    back = ClientUpdates.from_fedml(payload)
    assert back.round_idx == 2 and torch.equal(back.updates, u.updates) and back.client_ids.tolist() == [4, 1]
    with pytest.raises(ValueError, match="shapes disagree"):
        ClientUpdates(0, torch.tensor([1]), torch.randn(2, 5), torch.ones(1), torch.zeros(1, 0))
    with pytest.raises(ValueError, match="without client ids"):
        ClientUpdates.from_fedml({"w": torch.zeros(1)})


# -- a worker's data ---------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["label_flip", "min_max"])
def test_gather_gives_each_client_the_rows_the_standalone_workload_gives_it(tmp_path, mnist, attack):
    s = settings_from_dict(config(tmp_path, attack=attack, f=3))
    work = build_workload(s, mnist)
    plan = client_plan(s, mnist)
    assert torch.equal(plan.sample_counts, work.sample_counts)
    benign = [c for c in range(10) if c not in plan.malicious]
    chosen = [benign[2], plan.malicious[0], benign[0]]  # any order, an attacker among them
    x, y, index = plan.gather(chosen, lambda ix: (mnist.train_x[ix], mnist.train_y[ix]))
    for c, ix in zip(chosen, index):
        assert torch.equal(x[ix], work.x[work.client_index[c]])
        assert torch.equal(y[ix], work.y[work.client_index[c]])
    own = index[1][:len(plan.parts[chosen[1]])]  # the attacker's own rows, without the trigger rows
    flipped = int((y[own] != mnist.train_y[plan.parts[chosen[1]]]).sum())
    assert (flipped > 0) == (attack == "label_flip")


def tiny_idx_root(root: Path, n_train=40, n_test=12):
    """A data root holding an MNIST-format dataset of random 28x28 images (the loader reads IDX files)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = np.random.default_rng(0)

    def write(name, magic, arr):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        (raw / name).write_bytes(header + arr.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", 2051, g.integers(0, 256, (n_train, 28, 28)))
    write("train-labels-idx1-ubyte", 2049, g.integers(0, 10, n_train))
    write("t10k-images-idx3-ubyte", 2051, g.integers(0, 256, (n_test, 28, 28)))
    write("t10k-labels-idx1-ubyte", 2049, g.integers(0, 10, n_test))
    return root


def test_dataset_cache_equals_the_loaded_dataset_and_reads_rows(tmp_path):
    root = str(tiny_idx_root(tmp_path / "data"))
    loaded = load_dataset("mnist", root)
    cache = DatasetCache("mnist", root)
    assert not cache.ready
    cache.build()
    assert cache.ready and cache.path.parent == Path(root) / ".mmap"
    assert cache.build().path == cache.path  # a second build finds it
    mapped = cache.dataset()
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(mapped, key), getattr(loaded, key))
    assert (mapped.num_classes, mapped.kind, mapped.value_range) == (10, "image", (0.0, 1.0))
    ix = torch.tensor([39, 0, 17, 17, 5])
    x, y = cache.rows(ix)
    assert torch.equal(x, loaded.train_x[ix]) and torch.equal(y, loaded.train_y[ix])
    x0, y0 = cache.rows(torch.zeros(0, dtype=torch.long))  # no rows: the shapes and dtypes still
    assert x0.shape == (0, 1, 28, 28) and x0.dtype == torch.float32 and y0.shape == (0,) and y0.dtype == torch.int64
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 40\)"):
        cache.rows(torch.tensor([40]))
    mapped.train_x[0] += 1  # copy-on-write: the file is not changed
    assert torch.equal(DatasetCache("mnist", root).dataset().train_x[0], loaded.train_x[0])
    time.sleep(0.01)
    (Path(root) / "MNIST" / "raw" / "train-labels-idx1-ubyte").touch()  # a re-installed dataset: a new cache
    assert DatasetCache("mnist", root).path != cache.path


def test_dataset_cache_keeps_natural_clients(tmp_path, monkeypatch):
    import fedml_heterofl.data.cache as cache_module

    groups = [torch.tensor([0, 2]), torch.tensor([], dtype=torch.long), torch.tensor([1])]
    fake = Dataset("shakespeare", torch.arange(9).reshape(3, 3), torch.tensor([1, 2, 3]), torch.zeros(1, 3),
                   torch.zeros(1, dtype=torch.long), 80, "text", (0, 80), groups, [torch.tensor([0])])
    monkeypatch.setattr(cache_module, "load_dataset", lambda *a, **k: fake)
    (tmp_path / "shakespeare").mkdir()
    mapped = DatasetCache("shakespeare", str(tmp_path), max_clients=3).build().dataset()
    assert [g.tolist() for g in mapped.train_groups] == [[0, 2], [], [1]]
    assert [g.tolist() for g in mapped.test_groups] == [[0]] and mapped.value_range == (0, 80)


# -- the worker backend in FedML's call order, in one process -----------------------------------

def drive_workers(settings, data, workers):
    """FedML cross-silo's per-round calls for ``workers`` HeteroFLWorkerTrainers and the aggregator."""
    args = fedml_args(settings)
    plan = client_plan(settings, data)

    def read(ix):
        return data.train_x[ix], data.train_y[ix]

    root, validation = server_data(settings, data, read)
    aggregator = HeteroFLServerAggregator(initial_model(settings, 10), args, trigger_set=plan.trigger_set,
                                          validation_batch=validation, root_data=root,
                                          test_set=(data.test_x, data.test_y),
                                          round_clients=functools.partial(participants, settings))
    model = initial_model(settings, 10)
    trainers = [HeteroFLWorkerTrainer(
        initial_model(settings, 10), args, plan=plan, read_rows=read, vectorise=vectorised(settings, model, torch.device("cpu")),
        chunk=settings.train_args.vectorised_chunk,
        share=lambda t, r=r: assign_clients(participants(settings, t), plan.sample_counts, workers)[r])
        for r in range(workers)]
    for t in range(settings.train_args.comm_round):
        args.round_idx = t
        state = aggregator.get_model_params()
        entries = []
        for trainer in trainers:
            trainer.set_model_params(state)
            trainer.update_dataset(None, None, 0)
            trainer.train(None, torch.device("cpu"), args)
            entries.append((0, trainer.get_model_params()))
        kept, positions = aggregator.on_before_aggregation(entries)
        assert all(0 <= p < workers for p in positions) and len(kept) == len(positions)
        aggregator.set_model_params(aggregator.on_after_aggregation(aggregator.aggregate(kept)))
    return aggregator.history


@pytest.fixture(scope="module")
def standalone(mnist, tmp_path_factory):
    """The standalone runs the worker backend must reproduce: with and without client sampling."""
    out = {}
    for per_round in (10, 5):
        tmp = tmp_path_factory.mktemp(f"sa{per_round}")
        s = settings_from_dict(config(tmp, per_round=per_round))
        Simulation(s, workload=build_workload(s, mnist)).run(progress=False)
        out[per_round] = read_metrics(next((tmp / "single_process").iterdir()))
    return out


@pytest.mark.parametrize("per_round", [10, 5], ids=["all-clients", "sampled"])
@pytest.mark.parametrize("workers", [1, 3, 5])
def test_worker_backend_gives_the_standalone_rounds(tmp_path, mnist, standalone, workers, per_round):
    s = settings_from_dict(config(tmp_path, per_round=per_round))
    history = drive_workers(s, mnist, workers)
    reference = standalone[per_round]
    assert [h["round"] for h in history] == [int(r["round"]) for r in reference] == [0, 1, 2]
    for h, r in zip(history, reference):
        assert len(h["kept"]) + h["removed"] == per_round
        for key in ("removed", "removed_malicious", "removed_benign", "removed_watermark_verification"):
            assert h[key] == int(r[key]), key
        assert h["test_acc"] == pytest.approx(float(r["test_acc"]), abs=1e-4)
        assert h["test_acc_task"] == pytest.approx(float(r["test_acc_task"]), abs=1e-4)
        assert h["test_loss"] == pytest.approx(float(r["test_loss"]), rel=1e-5)
        if workers == 1 and per_round == 10:  # the same clients in the same vectorised passes: bit for bit
            assert (h["test_acc"], h["test_loss"]) == (float(r["test_acc"]), float(r["test_loss"]))
        assert h["time_train"] >= 0 and h["time_server"] >= 0 and h["time_eval"] >= 0


def test_aggregator_refuses_updates_of_other_clients_than_the_rounds(tmp_path, mnist):
    s = settings_from_dict(config(tmp_path, per_round=5, rounds=1))
    args = fedml_args(s)
    args.round_idx = 0
    aggregator = HeteroFLServerAggregator(initial_model(s, 10), args, trigger_set=client_plan(s, mnist).trigger_set,
                                          round_clients=functools.partial(participants, s))
    expected = participants(s, 0)
    d = aggregator.codec.d

    def entry(ids, round_idx=0):
        ids = torch.as_tensor(ids)
        return 0, ClientUpdates(round_idx, ids, torch.zeros(len(ids), d), torch.ones(len(ids)),
                                torch.zeros(len(ids), 0)).to_fedml()

    other = sorted(set(range(10)) - set(expected.tolist()))[:1]
    with pytest.raises(RuntimeError, match="but the round's clients are"):
        aggregator.on_before_aggregation([entry(expected[:-1]), entry(other)])
    with pytest.raises(RuntimeError, match="was trained twice"):
        aggregator.on_before_aggregation([entry(expected), entry(expected[:1])])
    with pytest.raises(RuntimeError, match="updates of round 3"):
        aggregator.on_before_aggregation([entry(expected, round_idx=3)])
    bad = ClientUpdates(0, expected, torch.zeros(len(expected), d + 1), torch.ones(len(expected)),
                        torch.zeros(len(expected), 0)).to_fedml()
    with pytest.raises(ValueError, match=f"server's model has d={d}"):
        aggregator.on_before_aggregation([(0, bad)])


# -- real mpirun jobs --------------------------------------------------------------------------

def run_cli(tmp_path, cfg, np_=None, timeout=300):
    path = tmp_path / f"cfg_{np_}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "fedml_heterofl", "--cf", str(path), "--no-progress"]
    if np_ is not None:
        cmd = [*MPIRUN, "-np", str(np_), *cmd]
    env = dict(os.environ, FEDML_HETEROFL_QUIET="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@needs_mpirun
@pytest.mark.parametrize("np_,per_round,attack,params", [
    (4, 5, "label_flip", {}), (2, 10, "min_max", {}),
    # the rank-0 server reads the attackers' own rows for the loss harm, as the standalone run hands them
    (3, 10, "adaptive_deviation", {"harm": "loss", "loss_samples": 32, "refine": 1, "directions": ["ipm", "std"]})],
    ids=["3-workers-sampled-label-flip", "1-worker-all-clients-min-max", "2-workers-adaptive-deviation-loss"])
def test_mpirun_gives_the_standalone_rounds(tmp_path, mnist, np_, per_round, attack, params):
    extra = {"attack_args": {"attack_params": params}}
    s = settings_from_dict(config(tmp_path, per_round=per_round, attack=attack, **extra))
    Simulation(s, workload=build_workload(s, mnist)).run(progress=False)
    proc = run_cli(tmp_path, config(tmp_path, per_round=per_round, attack=attack, backend="MPI", **extra), np_)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = next((tmp_path / "MPI").iterdir())
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "partition.json", "metrics.csv", "summary.json"}
    sa, mp = read_metrics(next((tmp_path / "single_process").iterdir())), read_metrics(run)
    assert [r["round"] for r in mp] == ["0", "1", "2"]
    for a, b in zip(sa, mp):
        for key in ("removed", "removed_malicious", "removed_benign"):
            assert a[key] == b[key], key
        if attack == "adaptive_deviation":
            assert (a["attack_direction"], a["attack_poisoned"]) == (b["attack_direction"], b["attack_poisoned"])
            assert float(b["attack_harm"]) == pytest.approx(float(a["attack_harm"]), rel=1e-4)
            assert a["deviation_agrees"] == b["deviation_agrees"] == "1.0"
        assert float(b["test_acc"]) == pytest.approx(float(a["test_acc"]), abs=1e-4)
        assert float(b["test_loss"]) == pytest.approx(float(a["test_loss"]), rel=1e-5)


@needs_mpirun
def test_misstarted_jobs_fail_once_from_rank_0_before_fedml_starts(tmp_path):
    cfg = config(tmp_path, clients=4, per_round=2, f=0, attack=None, backend="MPI",
                 attack_args={"enable_attack": False})
    alone = run_cli(tmp_path, cfg)
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines()[-1].startswith("fedml-heterofl run: comm_args.backend: MPI runs a server")
    too_many = run_cli(tmp_path, cfg, np_=4)
    assert too_many.returncode != 0
    line = "fedml-heterofl run: mpirun -np 4 starts 3 workers for 2 clients per round; allowed -np: 2 to 3"
    assert too_many.stderr.count("fedml-heterofl run:") == 1 and line in too_many.stderr
    assert not (tmp_path / "MPI").exists()  # nothing ran: no run folder, no FedML home


@needs_mpirun
def test_a_killed_worker_ends_the_job_within_60s(tmp_path):
    cfg = config(tmp_path, clients=4, per_round=4, f=1, rounds=100000, backend="MPI")
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [*MPIRUN, "-np", "3", sys.executable, "-m", "fedml_heterofl", "--cf", str(path), "--no-progress"]
    env = dict(os.environ, FEDML_HETEROFL_QUIET="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        victim, deadline = None, time.time() + 240
        while victim is None and time.time() < deadline and job.poll() is None:
            time.sleep(0.5)
            if any((tmp_path / "MPI").glob("*/partition.json")):  # the server wrote it just before FedML starts
                victim = rank_pid(str(path), rank=2)
        assert victim is not None, "the job did not start its rounds"
        time.sleep(3)  # FedML's rounds are running
        assert job.poll() is None
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        job.wait(timeout=90)
        assert time.time() - killed < 60
        assert job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()


def rank_pid(marker, rank):
    """The pid of the MPI rank ``rank`` whose command line contains ``marker``."""
    for proc in Path("/proc").iterdir():
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="ignore") and \
                    f"OMPI_COMM_WORLD_RANK={rank}\0".encode() in (proc / "environ").read_bytes():
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None
