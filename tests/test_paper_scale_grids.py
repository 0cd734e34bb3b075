"""The paper-scale grids that cannot run here (CIFAR-10/ResNet20 and EMNIST/CNN: their data is not
installable from a package registry, and they need a GPU) are checked on small files in the datasets'
real formats: every cell of the grid validates, and two of its cells run one round end to end with only
the client count, rounds, data root and device (CPU) changed (the model, dataset loader, attack and defense are the
grid's own)."""
import gzip

import numpy as np
import pytest
from test_data_sources import idx_bytes, write_cifar

from fedml_heterofl.experiments.grid import load_grid
from fedml_heterofl.simulation.runner import Simulation
from helpers import ROOT, read_metrics


def write_emnist_byclass(root, n_train=120, n_test=30):
    """EMNIST ``byclass`` in its distributed format: gzipped IDX files, 62 classes."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for kind, a in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", np.arange(n) % 62)):
            with gzip.open(raw / f"emnist-byclass-{split}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(idx_bytes(a))


SMALL = {"train_args.client_num_in_total": 4, "train_args.client_num_per_round": 4, "train_args.comm_round": 1,
         "attack_args.byzantine_client_num": 1, "data_args.root_size": 8, "data_args.validation_size": 8,
         "validation_args.frequency_of_the_test": 1, "device_args.using_gpu": False}


@pytest.mark.parametrize("grid, write, classes", [
    ("table1_cifar10_resnet20", lambda root: write_cifar(root, n=20), 10),
    ("table1_emnist_cnn", write_emnist_byclass, 62),
])
def test_paper_scale_grid_runs_on_small_files_in_the_real_format(tmp_path, grid, write, classes):
    write(tmp_path / "data")
    path = ROOT / "config" / "grids" / f"{grid}.yaml"
    _, full = load_grid(str(path))
    assert {s.train_args.client_num_in_total for _, s in full} == {100}  # paper scale as shipped
    assert {s.attack_args.byzantine_client_num for _, s in full} == {20}
    _, cells = load_grid(str(path), {**SMALL, "data_args.data_cache_dir": str(tmp_path / "data")})
    cells = dict(cells)
    assert len(cells) == len(full) == 3 * 7 * 6  # seeds x defenses x attacks
    for name in ("seed=0,defense=heterofl,attack=min_max", "seed=0,defense=fedavg,attack=label_flip"):
        sim = Simulation(cells[name], results_dir=str(tmp_path / "results"))
        logits = sim.model(sim.work.test[0][:2])  # the grid's model, with HeteroFL's watermark output
        assert logits.shape == (2, classes + int(cells[name].watermark))
        summary = sim.run(progress=False)
        assert summary["finished"] and summary["rounds"] == 1
        row = read_metrics(sim.store.path)[-1]
        assert 0.0 <= float(row["test_acc"]) <= 1.0
