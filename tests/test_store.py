"""Result folders: atomic files, checkpoint round-trip with weights_only, metrics CSV."""
import os

import torch

from fedml_heterofl.experiments.store import RunStore, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write(p, "one")
    atomic_write(p, b"two")
    assert p.read_text() == "two"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_round_trip(tmp_path):
    store = RunStore(tmp_path, "run")
    assert store.load_checkpoint() is None and not store.finished
    gen = torch.Generator().manual_seed(3)
    rows = [{"round": 0, "test_acc": 0.5}, {"round": 1, "test_acc": 0.75, "removed": 3}]
    state = {"round": 1, "params": torch.arange(5.0), "metrics": rows, "generator": gen.get_state()}
    store.save_round(state, rows)
    back = store.load_checkpoint()
    assert back["round"] == 1 and torch.equal(back["params"], torch.arange(5.0)) and back["metrics"] == rows
    g2 = torch.Generator()
    g2.set_state(back["generator"])
    assert torch.equal(torch.rand(3, generator=g2), torch.rand(3, generator=gen))
    assert store.read_metrics() == [{"round": "0", "test_acc": "0.5", "removed": ""},
                                    {"round": "1", "test_acc": "0.75", "removed": "3"}]
    store.write_config({"a": 1, "b": float("nan")})
    assert (store.path / "config.yaml").read_text() == "a: 1\nb: null\n"
    store.write_summary({"finished": True, "acc": float("inf")})
    assert store.finished and store.read_summary()["acc"] is None
