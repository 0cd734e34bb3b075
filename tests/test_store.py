"""Result folders: atomic files, checkpoint round-trip with weights_only, metrics CSV; the previous
checkpoint kept and used when the last one is damaged (empty, truncated, random bytes, one flipped bit,
another file); unwritable places reported as StoreError naming the path."""
import errno
import io
import logging
import os
import random
import zipfile

import pytest
import torch

from fedml_heterofl.record.store import MARKER, RunStore, StoreError, atomic_write
from helpers import read_metrics


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
    assert read_metrics(store.path) == [{"round": "0", "test_acc": "0.5", "removed": ""},
                                          {"round": "1", "test_acc": "0.75", "removed": "3"}]
    store.write_config({"a": 1, "b": float("nan")})
    assert (store.path / "config.yaml").read_text() == "a: 1\nb: null\n"
    store.write_summary({"finished": True, "acc": float("inf")})
    assert store.finished and store.read_summary()["acc"] is None


def state(round_idx, value=0.0):
    """A checkpoint as the simulator writes it after round ``round_idx`` (params filled with ``value``)."""
    rows = [{"round": t, "test_acc": 0.5} for t in range(round_idx + 1)]
    return {"round": round_idx, "params": torch.full((6,), value), "metrics": rows, "identity": "abc"}, rows


def saved(tmp_path, rounds):
    store = RunStore(tmp_path, "run")
    for t in range(rounds):
        store.save_round(*state(t, float(t)))
    return store


def test_folder_is_made_by_the_first_write_only(tmp_path):
    store = RunStore(tmp_path / "results", "run")
    store.check_writable()
    assert store.load_checkpoint() is None and not store.finished
    assert not (tmp_path / "results").exists()  # checking and reading leave nothing behind
    store.save_round(*state(0))
    assert sorted(os.listdir(store.path)) == [MARKER, "checkpoint.pt", "metrics.csv"]  # the marker: ours


def test_the_previous_checkpoint_is_kept(tmp_path):
    store = saved(tmp_path, 3)
    assert store.read_checkpoint(store.checkpoint)["round"] == 2
    assert store.read_checkpoint(store.previous)["round"] == 1
    assert float(store.read_checkpoint(store.previous)["params"][0]) == 1.0
    assert not [f for f in os.listdir(store.path) if "tmp" in f]


def tensor_data_offset(path):
    """Byte offset of the first tensor's data inside a torch.save zip archive (after the entry's local
    header: 30 bytes, then the name and the extra field, whose lengths are at bytes 26 and 28)."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename)
    header = path.read_bytes()[info.header_offset:info.header_offset + 30]
    return info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")


DAMAGE = {
    "empty": lambda data, path: b"",
    "truncated": lambda data, path: data[: len(data) // 2],
    "random": lambda data, path: bytes(random.Random(0).getrandbits(8) for _ in range(len(data))),
    # one flipped bit in the parameters: torch.load reads it without complaint; only the digest sees it
    "flipped_bit": lambda data, path: (data[:tensor_data_offset(path)] + bytes([data[tensor_data_offset(path)] ^ 1])
                                       + data[tensor_data_offset(path) + 1:]),
    "not_a_checkpoint": lambda data, path: _torch_bytes({"weights": torch.zeros(3)}),
}


def _torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    store = saved(tmp_path, 3)
    data = store.checkpoint.read_bytes()
    store.checkpoint.write_bytes(DAMAGE[damage](data, store.checkpoint))
    with caplog.at_level(logging.WARNING, logger="fedml_heterofl"):
        back = store.load_checkpoint()
    assert back["round"] == 1 and float(back["params"][0]) == 1.0
    assert str(store.checkpoint) in caplog.text and "previous checkpoint" in caplog.text


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_without_an_intact_previous_checkpoint_names_the_file_and_offers_fresh(tmp_path, damage):
    store = saved(tmp_path, 1)  # no previous checkpoint yet
    store.checkpoint.write_bytes(DAMAGE[damage](store.checkpoint.read_bytes(), store.checkpoint))
    with pytest.raises(StoreError) as info:
        store.load_checkpoint()
    message = str(info.value)
    assert f"{store.checkpoint} is damaged" in message and "--fresh" in message
    assert "weights_only" not in message and "\n" not in message


def test_both_checkpoints_damaged_names_both(tmp_path):
    store = saved(tmp_path, 3)
    store.checkpoint.write_bytes(b"")
    store.previous.write_bytes(b"junk")
    with pytest.raises(StoreError, match=r"checkpoint\.pt is damaged.*previous checkpoint .*checkpoint\.prev\.pt "
                                         r"is damaged.*--fresh"):
        store.load_checkpoint()


def test_a_kill_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path):
    store = saved(tmp_path, 3)
    store.checkpoint.unlink()  # killed after checkpoint.pt became checkpoint.prev.pt, before the new one landed
    assert store.load_checkpoint()["round"] == 1


def test_unwritable_places_are_store_errors_naming_the_path(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=f"{blocker} is a file, not a folder"):
        RunStore(blocker / "deeper", "run").check_writable()
    with pytest.raises(StoreError, match="cannot write into /proc"):  # the kernel refuses, even to root
        RunStore("/proc/fedml_heterofl_results", "run").check_writable()

    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    store = RunStore(tmp_path, "run")
    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(StoreError, match=r"cannot write .*metrics\.csv: Read-only file system"):
        store.write_metrics([{"round": 0}])
    assert not [f for f in os.listdir(store.path) if "tmp" in f]  # the temporary file is removed
