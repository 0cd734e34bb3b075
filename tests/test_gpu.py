"""CUDA checks (marker ``gpu``; skipped without a CUDA device, never required by CI):

* every defense aggregates the same round on CUDA as on the CPU;
* a standalone CNN run (``device_args.using_gpu``) trains on CUDA;
* a 3-rank MPI job (a server and 2 workers sharing GPU 0 through a ``gpu_mapping.yaml``) gives the
  standalone CUDA run's rounds.

Run them on a GPU machine with ``pytest -m gpu tests/test_gpu.py``.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fedml_heterofl.defense import REGISTRY as DEFENSES, build_defense
from fedml_heterofl.models import ParamLayout, batched_loss
from fedml_heterofl.settings import settings_from_dict
from fedml_heterofl.simulation.local_training import client_seed, local_sgd
from fedml_heterofl.simulation.runner import Simulation
from fedml_heterofl.simulation.server_round import ServerRound
from helpers import mnist_lr_config, read_metrics

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda:0")


def metrics(run_root):
    """The metrics rows of the one run folder under ``run_root``."""
    return read_metrics(next(Path(run_root).iterdir()))


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_defense_gives_the_cpu_round_on_cuda(name):
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(6, 4)
    layout = ParamLayout(model)
    w = layout.flatten(model)
    data = [(torch.randn(30, 6, generator=g), torch.randint(0, 4, (30,), generator=g)) for _ in range(12)]
    U = torch.stack([local_sgd(model, layout, w, x, y, epochs=1, batch_size=8, lr=0.1, seed=client_seed(0, 0, i))
                     for i, (x, y) in enumerate(data)])
    U[3] *= -5  # one odd update, so that selecting rules have something to remove
    trigger = (torch.randn(4, 6, generator=g), torch.full((4,), 3))
    root = data[0]
    params = {"multikrum": {"f": 3}, "dnc": {"f": 3}, "zeno": {"b": 3}, "heterofl": {"lam": -50.0},
              "trimmed_mean": {"f": 3}, "bulyan": {"f": 2}}

    def round_on(device):
        on = lambda b: tuple(t.to(device) for t in b)  # noqa: E731
        m = torch.nn.Linear(6, 4).to(device)
        server = ServerRound(
            build_defense(name, **params.get(name, {})), seed=0, loss_fn=lambda p, b: batched_loss(m, layout, p, b),
            trigger_set=on(trigger), validation_batch=on(root),
            server_update_fn=lambda t, w_t: local_sgd(m, layout, w_t, *on(root), epochs=1, batch_size=8, lr=0.1,
                                                      seed=client_seed(0, t, 10**6)))
        return server(0, w.to(device), torch.arange(12, device=device), U.to(device),
                      torch.full((12,), 30.0, device=device))

    cpu, cuda = round_on(torch.device("cpu")), round_on(CUDA)
    assert cuda.params.device.type == "cuda"
    assert torch.equal(cuda.result.kept.cpu(), cpu.result.kept)
    assert torch.allclose(cuda.params.cpu(), cpu.params, atol=1e-5, rtol=1e-4)


def cnn_config(tmp_path, backend="single_process", **device):
    return mnist_lr_config(tmp_path / backend, "min_max", 2, {
        "common_args": {"training_type": "cross_silo" if backend == "MPI" else "simulation"},
        "comm_args": {"backend": backend},
        "model_args": {"model": "cnn"},
        "data_args": {"max_samples_per_client": 100},
        "train_args": {"client_num_in_total": 6, "client_num_per_round": 6, "comm_round": 2, "batch_size": 32},
        "device_args": {"using_gpu": True, **device},
    })


def test_a_cnn_round_trains_on_cuda(tmp_path):
    cfg = cnn_config(tmp_path)
    cfg["attack_args"]["enable_attack"] = False
    summary = Simulation(settings_from_dict(cfg)).run(progress=False)
    rows = metrics(tmp_path / "single_process")
    assert summary["finished"] and len(rows) == 2
    # on the CPU the same run goes from loss 2.364 to 2.309 (accuracy 0.098 -> 0.165)
    assert float(rows[1]["test_loss"]) < float(rows[0]["test_loss"])


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not found")
def test_a_3_rank_mpi_round_on_cuda_gives_the_standalone_cuda_rounds(tmp_path):
    mapping = tmp_path / "gpu_mapping.yaml"
    mapping.write_text(yaml.safe_dump({"one_gpu": {"localhost": [3]}}))
    cfg = cnn_config(tmp_path, "MPI", gpu_mapping_file=str(mapping), gpu_mapping_key="one_gpu")
    cfg["model_args"]["model"] = "lr"  # deterministic training: the rounds must agree
    path = tmp_path / "mpi.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "3", sys.executable, "-m", "fedml_heterofl",
           "--cf", str(path), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, FEDML_HETEROFL_QUIET="1", PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    standalone = cnn_config(tmp_path)
    standalone["model_args"]["model"] = "lr"
    Simulation(settings_from_dict(standalone)).run(progress=False)
    for a, b in zip(metrics(tmp_path / "single_process"), metrics(tmp_path / "MPI")):
        assert a["removed"] == b["removed"]
        assert float(b["test_acc"]) == pytest.approx(float(a["test_acc"]), abs=1e-3)
