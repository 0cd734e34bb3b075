"""FedML cross-silo over MPI (``mpirun -np 4``: a server and 3 clients) with our trainer and aggregator.

The MPI run must give the same rounds as the same FedML lifecycle driven in-process, and a rank that
fails (exception or SIGKILL) must end the whole job with a non-zero status instead of hanging.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fedml_heterofl.fedml_bridge as bridge
from fedml.core.security.fedml_attacker import FedMLAttacker
from fedml.core.security.fedml_defender import FedMLDefender

sys.path.insert(0, str(Path(__file__).parent))
import mpi_smoke_main as smoke  # noqa: E402

SCRIPT = Path(__file__).parent / "mpi_smoke_main.py"

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None,
                                reason="mpirun not found: install OpenMPI (run/setup.sh apt-installs openmpi-bin)")


def mpirun(out_dir, *extra, timeout=120):
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(smoke.CLIENTS + 1), sys.executable,
           str(SCRIPT), str(out_dir), *extra]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.perf_counter() - start


def in_process(args):
    """FedML cross-silo's call order, driven in one process (rank r's client is id r - 1)."""
    FedMLDefender._defender_instance = None
    FedMLAttacker._attacker_instance = None
    dataset, trigger = smoke.make_dataset(args.random_seed)
    _, _, _, test_global, local_num, train_local, test_local, _ = dataset
    aggregator = bridge.HeteroFLServerAggregator(smoke.make_model(args.random_seed), args, trigger_set=trigger)
    trainer = bridge.HeteroFLClientTrainer(smoke.make_model(args.random_seed), args, trigger_set=trigger)
    for round_idx in range(args.comm_round):
        args.round_idx = round_idx
        global_state = aggregator.get_model_params()
        models = []
        for client in range(smoke.CLIENTS):
            trainer.set_id(client)
            trainer.update_dataset(train_local[client], test_local[client], local_num[client])
            trainer.set_model_params(global_state)
            trainer.train(train_local[client], torch.device("cpu"), args)
            models.append((local_num[client], trainer.get_model_params()))
        kept, _ = aggregator.on_before_aggregation(models)
        aggregator.set_model_params(aggregator.on_after_aggregation(aggregator.aggregate(kept)))
        aggregator.test(test_global, torch.device("cpu"), args)
    return aggregator


def test_mpi_cross_silo_runs_our_hooks_and_matches_the_in_process_lifecycle(tmp_path):
    proc, _ = mpirun(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / ".fedml" / "fedml_trace").is_dir()  # FedML's home is under the run directory

    reference = in_process(smoke.make_args())
    codec = bridge.StateCodec.for_model(reference.model)
    assert torch.allclose(torch.tensor(result["params"]), codec.flatten(reference.get_model_params()), atol=1e-6)
    assert [r["round"] for r in result["history"]] == [0, 1, 2]
    for mpi, ref in zip(result["history"], reference.history):
        assert mpi["kept"] == ref["kept"]
        assert math.isclose(mpi["test_acc"], ref["test_acc"], abs_tol=1e-9)
        assert math.isclose(mpi["test_loss"], ref["test_loss"], rel_tol=1e-5)


@pytest.mark.parametrize("failure", ["0:1:raise", "2:1:kill"], ids=["server-raises", "client-killed"])
def test_a_failing_rank_ends_the_whole_job_nonzero_within_60s(tmp_path, failure):
    proc, seconds = mpirun(tmp_path, "--fail", failure, timeout=90)
    assert proc.returncode != 0
    assert seconds < 60
    assert not (tmp_path / "result.json").exists()
