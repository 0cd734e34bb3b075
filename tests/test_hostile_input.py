"""Hostile and careless input (issue 23): nothing runs from a data file, nothing of the user's is
deleted or overwritten, YAML is parsed within bounds, one writer per run folder, data verified where
it is used, and one line (never a traceback) for each user error."""
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import fedml_heterofl.simulation.runner as runner_module
from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.data import DataError
from fedml_heterofl.experiments.store import LOCK, MARKER, RunStore
from fedml_heterofl.data.sources import load_dataset
from fedml_heterofl.settings import SettingsError, load_settings
from fedml_heterofl.yaml_input import MAX_YAML_BYTES, YamlInputError, parse_yaml, read_yaml
from test_reliability import cached_data, cli, tiny, write  # noqa: F401 - cached_data is a fixture

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fedml_heterofl"


def one_line(err, *parts):
    """stderr is exactly one line, without a traceback, holding every part."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------ 1. no code from data

class Planted:
    """A pickle whose loading would create ``marker`` (``__reduce__`` -> ``os.system``)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_cifar(root, n=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, f in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = np.full((n, 3072), b, np.uint8)
        (folder / f).write_bytes(pickle.dumps({b"data": data, b"labels": [b % 10] * n, b"batch_label": f.encode()}))
    return folder


@pytest.mark.parametrize("payload", ["object", "in_dict"])
def test_a_planted_cifar_pickle_runs_nothing_and_is_one_line(tmp_path, capsys, payload):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "ran"
    planted = Planted(marker) if payload == "object" else {b"data": Planted(marker), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(planted))
    assert pickle.loads(pickle.dumps(Planted(tmp_path / "control"))) == 0  # the payload does run under pickle
    assert (tmp_path / "control").exists()
    with pytest.raises(DataError, match=r"data_batch_1 is corrupt: it names posix\.system.*refused, nothing was "
                                        r"run.*fedml-heterofl data fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path))
    assert cli_main(["data", "info", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^cifar10 +yes +no .*posix\.system", out, re.M), out
    assert not marker.exists()


def test_an_object_array_in_a_cifar_batch_is_refused(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.array([[1] * 3072], dtype=object), b"labels": [0]}))
    with pytest.raises(DataError, match="test_batch is corrupt: an array of Python objects"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar_labels_out_of_range_are_one_line(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(DataError, match="data_batch_2 holds labels from 0 to 10; allowed: 0 to 9"):
        load_dataset("cifar10", root=str(tmp_path))


def test_the_package_never_unpickles_or_loads_unsafely():
    """No ``pickle.load(s)``, no ``torch.load`` without ``weights_only=True``, no ``yaml.load`` except
    through the bounded SafeLoader subclass, no ``yaml.safe_load`` of a user's file."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"pickle\.loads?\(|torch\.load\([^)]*\)|yaml\.(?:unsafe_|full_)?load\(", text):
            call = match.group(0)
            if call.startswith("torch.load") and "weights_only=True" in call:
                continue
            if call == "yaml.load(" and "Loader=_BoundedLoader" in text[match.start():match.start() + 80]:
                continue
            offenders.append(f"{path.relative_to(ROOT)}: {call}")
        if "yaml.safe_load(" in text:
            offenders.append(f"{path.relative_to(ROOT)}: yaml.safe_load")
    assert not offenders


# ------------------------------------------------------------------------------ 3. bounded YAML

BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 9)}]\n" for i in range(9))


@pytest.mark.parametrize("text, part", [
    (f"common_args: {{random_seed: 1}}\nenvironment_args:\n  {BOMB.replace(chr(10), chr(10) + '  ')}",
     "anchors and aliases (&l0, *l0) are not allowed at line 3"),
    ("data_args: &d {dataset: mnist}\nmodel_args: *d\n", "anchors and aliases (&d, *d) are not allowed at line 1"),
    ("base: &b {x: 1}\nother:\n  <<: *b\n", "anchors and aliases"),
    ("data_args: {dataset: mnist}\nmodel_args: {model: lr}\ndata_args: {dataset: cifar10}\n",
     "duplicate key 'data_args' at line 3"),
    ("train_args: {learning_rate: 0.1, learning_rate: 0.2}\n", "duplicate key 'learning_rate' at line 1"),
])
def test_aliases_and_duplicate_keys_are_refused_at_once(tmp_path, text, part):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SettingsError, match=re.escape(part)) as info:
        load_settings(path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_bomb_is_a_bomb_for_plain_pyyaml():
    """The refused document is the issue's alias bomb: 9**9 leaves when expanded (not expanded here)."""
    nodes = yaml.compose(BOMB)
    assert len(nodes.value) == 9 and BOMB.count("*l") == 8 * 9 and len(BOMB) < 1024


def test_files_above_the_limit_are_refused_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(YamlInputError, match=f"big.yaml: {MAX_YAML_BYTES + 3} bytes; a configuration file may "
                                             f"hold at most {MAX_YAML_BYTES} bytes"):
        read_yaml(path)
    with pytest.raises(YamlInputError, match="larger than"):
        parse_yaml("x" * (MAX_YAML_BYTES + 1), "--set")


def test_plain_yaml_still_reads_as_pyyaml_reads_it():
    text = (ROOT / "config" / "mnist_lr.yaml").read_text()
    assert parse_yaml(text) == yaml.safe_load(text)
    assert parse_yaml("a: [1, {b: 2}]\nc: 1e-3\n") == {"a": [1, {"b": 2}], "c": "1e-3"}


# ------------------------------------------------------------------------------ 2. only what we made

def test_a_user_folder_survives_run_and_fresh(tmp_path, capsys, cached_data):
    victim = tmp_path / "results" / "tiny"
    victim.mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work")
    (victim / "config.yaml").write_text("mine: true\n")
    path = write(tmp_path, tiny(tmp_path))
    for extra in ([], ["--fresh"]):
        status, err = cli(capsys, "--cf", path, *extra)
        assert status == 2
        one_line(err, f"{victim} exists and is not a run folder", "thesis.tex", "nothing in it is changed")
    assert sorted(p.name for p in victim.iterdir()) == ["config.yaml", "thesis.tex"]
    assert (victim / "thesis.tex").read_text() == "years of work" and (victim / "config.yaml").read_text() == "mine: true\n"


def test_fresh_deletes_only_the_files_a_run_writes(tmp_path, capsys, cached_data):
    path = write(tmp_path, tiny(tmp_path))
    assert cli(capsys, "--cf", path)[0] == 0
    run = tmp_path / "results" / "tiny"
    assert {p.name for p in run.iterdir()} == {MARKER, LOCK, "config.yaml", "metrics.csv", "summary.json",
                                               "checkpoint.pt", "checkpoint.prev.pt", "run.log", "partition.json"}
    (run / "notes.txt").write_text("mine")  # a file of the user's inside a run folder
    (run / "summary.json").write_text("{}")  # fresh rewrites it
    assert cli(capsys, "--cf", path, "--fresh")[0] == 0
    assert (run / "notes.txt").read_text() == "mine" and json.loads((run / "summary.json").read_text())["finished"]
    assert RunStore(tmp_path / "results", "tiny").finished


def test_a_run_folder_from_before_the_marker_resumes(tmp_path, capsys, cached_data):
    path = write(tmp_path, tiny(tmp_path))
    assert cli(capsys, "--cf", path)[0] == 0
    run = tmp_path / "results" / "tiny"
    (run / MARKER).unlink()
    (run / LOCK).unlink()
    before = (run / "metrics.csv").read_text()
    status, err = cli(capsys, "--cf", path)
    assert status == 0 and (run / MARKER).is_file() and (run / "metrics.csv").read_text() == before


def test_a_run_that_fails_before_its_first_round_keeps_only_its_log(tmp_path, capsys, cached_data, monkeypatch):
    path = write(tmp_path, tiny(tmp_path))

    def broken(*args, **kwargs):
        raise ValueError("broken training")

    monkeypatch.setattr(runner_module, "train_clients", broken)
    status, err = cli(capsys, "--cf", path)
    run = tmp_path / "results" / "tiny"
    assert status == 2
    one_line(err, "broken training", f"{run} keeps only run.log (with the traceback)")
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER, LOCK, "run.log"])
    log_text = (run / "run.log").read_text()
    assert "Traceback" in log_text and "ValueError: broken training" in log_text


# ------------------------------------------------------------------------------ 4. one writer per folder

def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, capsys, cached_data):
    path = write(tmp_path, tiny(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "results" / "tiny")],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        status, err = cli(capsys, "--cf", path)
        assert status == 2 and time.perf_counter() - start < 5
        one_line(err, "is being written by another run", f"(pid {holder.pid})")
        assert not (tmp_path / "results" / "tiny" / "metrics.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed holding the lock: the kernel released it, so the run goes ahead
    assert cli(capsys, "--cf", path)[0] == 0


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from fedml_heterofl.experiments.store import RunStore
folder = Path(sys.argv[1])
with RunStore(folder.parent, folder.name).lock():
    print("locked", flush=True)
    time.sleep(60)
"""
