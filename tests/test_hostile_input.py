"""Hostile and careless input (issue 23): nothing runs from a data file, nothing of the user's is
deleted or overwritten, YAML is parsed within bounds, one writer per run folder, data verified where
it is used, and one line (never a traceback) for each user error."""
import dataclasses
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fedml_heterofl.data.catalog as catalog
import fedml_heterofl.data.dataset as dataset_module
import fedml_heterofl.simulation.runner as runner_module
from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.data import DataError
from fedml_heterofl.data import load_dataset
from fedml_heterofl.record.store import LOCK, MARKER, RunStore
from fedml_heterofl.settings import SettingsError, load_settings
from fedml_heterofl.yaml_input import MAX_YAML_BYTES, YamlInputError, parse_yaml, read_yaml
from test_mpi_backend import config as mpi_config, needs_mpirun, run_cli as run_mpi_cli
from test_reliability import cached_data, cli, one_line, tiny, write  # noqa: F401 - cached_data is a fixture

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fedml_heterofl"


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


class Py2Pickler(pickle._Pickler):
    """Pickles byte strings as Python 2 did (``BINSTRING``, no ``_codecs.encode``): the official
    CIFAR-10 batches' format (protocol 2, written by Python 2's cPickle)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def test_batches_in_the_official_format_load(tmp_path):
    folder = write_cifar(tmp_path)
    for b, f in enumerate(sorted(p.name for p in folder.iterdir())):
        batch = {b"batch_label": f.encode(), b"labels": [b, 9 - b], b"filenames": [b"a.png", b"b.png"],
                 b"data": np.stack([np.full(3072, b, np.uint8), np.arange(3072).astype(np.uint8)])}
        out = io.BytesIO()
        Py2Pickler(out, protocol=2).dump(batch)
        globals_named = [arg for op, arg, _ in pickletools.genops(out.getvalue()) if op.name == "GLOBAL"]
        assert globals_named == ["numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"]
        (folder / f).write_bytes(out.getvalue())
    d = load_dataset("cifar10", root=str(tmp_path))  # data_batch_1..5 are b = 0..4, test_batch b = 5
    assert d.train_y.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5] and d.test_y.tolist() == [5, 4]
    assert d.train_x.shape == (10, 3, 32, 32) and torch.equal(d.train_x[2], torch.full((3, 32, 32), 1.0) / 255)
    assert torch.equal(d.test_x[1].flatten(), torch.arange(3072).remainder(256).float() / 255)


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


UNSAFE = (r"pickle\.loads?\(|pickle\.Unpickler\(|torch\.load\([^)]*\)|yaml\.(?:unsafe_|full_|safe_)?load\("
          r"|allow_pickle=True")


def unsafe_calls(text):
    """The calls in ``text`` that could run code from, or expand without bound, a file a user names:
    ``pickle.load(s)``/``pickle.Unpickler(`` (our restricted subclass is named otherwise), ``torch.load``
    without ``weights_only=True``, numpy's ``allow_pickle=True``, and any YAML load but the bounded
    loader's (every YAML goes through :mod:`fedml_heterofl.yaml_input`)."""
    found = []
    for match in re.finditer(UNSAFE, text):
        call = match.group(0)
        if call.startswith("torch.load") and "weights_only=True" in call:
            continue
        if call == "yaml.load(" and "Loader=_BoundedLoader" in text[match.start():match.start() + 80]:
            continue
        found.append(call)
    return found


def test_the_unsafe_call_check_finds_each_kind():
    sample = ("pickle.load(fh)\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
              "np.load(p, allow_pickle=True)\nyaml.safe_load(t)\nyaml.load(t, Loader=yaml.Loader)\n"
              "pickle.Unpickler(fh).load()\ntorch.load(p, weights_only=True)\n"
              "yaml.load(text, Loader=_BoundedLoader)\nclass X(pickle.Unpickler):\n")
    assert unsafe_calls(sample) == ["pickle.load(", "pickle.loads(", "torch.load(p)",
                                    "torch.load(p, weights_only=False)", "allow_pickle=True", "yaml.safe_load(",
                                    "yaml.load(", "pickle.Unpickler("]


def test_the_package_never_unpickles_or_loads_unsafely():
    offenders = {str(path.relative_to(ROOT)): unsafe_calls(path.read_text()) for path in PACKAGE.rglob("*.py")}
    assert {path: calls for path, calls in offenders.items() if calls} == {}


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


def test_a_config_with_a_value_referenced_twice_is_written_without_aliases(tmp_path):
    shared = [1, 2]
    config = {"defense_args": {"defense_params": {"steps": shared}}, "attack_args": {"attack_params": {"s": shared}}}
    assert "*id001" in yaml.safe_dump(config)  # what yaml.safe_dump would write: an alias read_yaml refuses
    store = RunStore(tmp_path, "run")
    store.write_config(config)
    assert read_yaml(store.path / "config.yaml") == config and store.config_matches(config)


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
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert (victim / "config.yaml").read_text() == "mine: true\n"


def test_archiving_never_overwrites_a_user_folder(tmp_path, capsys):
    # a finished run's small files, to be archived where a user's folder of the same name already is
    run = tmp_path / "results" / "cell"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("ours: true\n")
    (run / "summary.json").write_text(json.dumps({"finished": True}))
    victim = tmp_path / "runs" / "cell"
    victim.mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work")
    (victim / "config.yaml").write_text("mine: true\n")
    assert cli_main(["archive", str(tmp_path / "results"), str(tmp_path / "runs")]) == 2
    one_line(capsys.readouterr().err, f"{victim} exists and is not a run folder", "thesis.tex")
    assert (victim / "config.yaml").read_text() == "mine: true\n" and not (victim / "summary.json").exists()
    # into a folder of ours (an earlier archive of the run) it copies
    (victim / "thesis.tex").unlink()
    (victim / "summary.json").write_text("{}")
    assert cli_main(["archive", str(tmp_path / "results"), str(tmp_path / "runs")]) == 0
    assert (victim / "config.yaml").read_text() == "ours: true\n"


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
from fedml_heterofl.record.store import RunStore
folder = Path(sys.argv[1])
with RunStore(folder.parent, folder.name).lock():
    print("locked", flush=True)
    time.sleep(3600)  # until the test kills it: a loaded machine may take over a minute to reach the lock
"""


# ------------------------------------------------------------------------------ 6. one line for user errors

def grid_cli(capsys, tmp_path, text, *extra):
    (tmp_path / "g.yaml").write_text(text)
    status = cli_main(["grid", "--no-progress", "--cf", str(tmp_path / "g.yaml"), *extra])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("text, part", [
    ("- base: c.yaml\n", "g.yaml: a grid file is a mapping (keys: base, results_dir"),
    ("base: c.yaml\naxes: [a]\n", "axes: expected a mapping of axis name -> labels"),
    ("base: 5\n", "base: expected a path (text), got 5"),
    ("base: c.yaml\nresults_dir: 7\n", "results_dir: expected a path (text), got 7"),
    ("base: c.yaml\naxes: {defense: {fedavg: [1, 2]}}\n", "label 'fedavg': expected a mapping of section.key"),
    ("base: c.yaml\naxes: {seed: []}\n", "expected a non-empty list of seeds"),
    ("base: c.yaml\noverrides: {common_args.run_name: x}\n", "common_args.run_name cannot be overridden"),
    ("base: c.yaml\noverrides: {comm_round: 3}\n", "key 'comm_round': expected 'section.key'"),
    ("base: missing.yaml\n", "configuration file not found"),
    ("base: c.yaml\nbase: d.yaml\n", "duplicate key 'base'"),
])
def test_malformed_grid_files_are_one_line(tmp_path, capsys, text, part):
    write(tmp_path, tiny(tmp_path))
    status, err = grid_cli(capsys, tmp_path, text)
    assert status == 2
    one_line(err, "fedml-heterofl grid:", part)


@pytest.mark.parametrize("item, part", [
    ("common_args.run_name=x", "--set: common_args.run_name cannot be overridden"),
    ("common_args.results_dir=elsewhere", "--set: common_args.results_dir cannot be overridden"),
    ("train_args.learning_rate=&a 1", "anchors and aliases"),
])
def test_set_refuses_what_a_grid_sets_itself(tmp_path, capsys, item, part):
    write(tmp_path, tiny(tmp_path))
    status, err = grid_cli(capsys, tmp_path, "base: c.yaml\n", "--set", item)
    assert status == 2
    one_line(err, part)


def test_a_failing_cell_is_one_line_and_its_traceback_is_in_its_log(tmp_path, capsys, cached_data, monkeypatch,
                                                                    caplog):
    write(tmp_path, tiny(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("cell broke")

    monkeypatch.setattr(runner_module, "train_clients", broken)
    status, err = grid_cli(capsys, tmp_path, f"base: c.yaml\nresults_dir: {tmp_path / 'g'}\naxes: {{seed: [1]}}\n")
    assert status == 1 and "Traceback" not in err and "cell broke" in err
    one_line(err, "1 of 1 cells failed", "seed=1: cell broke", "keeps only run.log (with the traceback)")
    logged = [r for r in caplog.records if r.getMessage().startswith("grid cell seed=1 failed: cell broke")]
    assert len(logged) == 1 and not logged[0].exc_info  # the log line carries no traceback
    assert "Traceback" in (tmp_path / "g" / "seed=1" / "run.log").read_text()


def test_data_fetch_into_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["data", "fetch", "mnist", "--root", str(blocker)]) == 1
    one_line(capsys.readouterr().err, f"cannot make the data root {blocker}", "choose another --root")


def test_an_unexpected_error_is_one_line_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    import fedml_heterofl.catalog as catalog

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(catalog, "main", broken)
    monkeypatch.delenv("FEDML_HETEROFL_DEBUG", raising=False)
    assert cli_main(["defenses"]) == 1
    one_line(capsys.readouterr().err, "fedml-heterofl defenses: KeyError: 'surprise'", "--debug shows the traceback")
    with pytest.raises(KeyError):
        cli_main(["defenses", "--debug"])
    assert os.environ.pop("FEDML_HETEROFL_DEBUG") == "1"


def test_fedml_import_warnings_are_silenced_by_the_command_only(tmp_path):
    code = ("import warnings, sys; from fedml_heterofl.cli import main; main(['defenses']); "
            "warnings.warn('ours', UserWarning); import fedml")
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0 and "heterofl" in proc.stdout
    assert "ours" in proc.stderr  # our own warnings still show
    assert "pkg_resources" not in proc.stderr and "Deprecat" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ 5. data verified where used

def fake_mnist(root, n_train=100, n_test=20, top=9):
    """Small MNIST files under ``root`` whose hashes become the pinned ones (returned)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(a):
        magic = 2051 if a.ndim == 3 else 2049
        return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.astype(np.uint8).tobytes()

    for split, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx(rng.integers(0, 256, (n, 28, 28))))
        labels = np.arange(n) % 10
        labels[-1] = top
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx(labels))
    return {p.name: dataset_module.sha256(p) for p in raw.iterdir()}


def pin_mnist(monkeypatch, hashes):
    """MNIST's pinned SHA-256 replaced by ``hashes`` for the test."""
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(catalog.DATASETS["mnist"], pinned_sha256=hashes))


def test_a_run_refuses_changed_data_naming_the_file_and_the_fetch_command(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    pin_mnist(monkeypatch, fake_mnist(data))
    path = write(tmp_path, tiny(tmp_path, data_args={"data_cache_dir": str(data)}))
    assert cli(capsys, "--cf", path)[0] == 0
    images = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    blob = bytearray(images.read_bytes())
    blob[16 + len(blob) // 2:] = bytes(len(blob) - 16 - len(blob) // 2)  # half the pixels zeroed, same size
    images.write_bytes(bytes(blob))
    status, err = cli(capsys, "--cf", path, "--fresh")
    assert status == 2
    one_line(err, f"{images} fails its SHA-256 check", f"fedml-heterofl data fetch mnist --root {data}")


def test_files_are_hashed_once_while_unchanged(tmp_path, monkeypatch):
    data = tmp_path / "data"
    pin_mnist(monkeypatch, fake_mnist(data))
    hashed = []
    real = dataset_module.sha256
    monkeypatch.setattr(dataset_module, "sha256", lambda p: hashed.append(p.name) or real(p))
    catalog.verify_installed("mnist", str(data))
    assert len(hashed) == 4 and (data / catalog.VERIFIED_RECORD).is_file()
    catalog.verify_installed("mnist", str(data))
    assert len(hashed) == 4  # recorded: size and mtime unchanged, nothing hashed
    labels = data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    catalog.verify_installed("mnist", str(data))
    assert hashed[4:] == ["t10k-labels-idx1-ubyte"]


def test_labels_out_of_range_are_one_line_before_the_run(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    pin_mnist(monkeypatch, fake_mnist(data, top=12))
    path = write(tmp_path, tiny(tmp_path, data_args={"data_cache_dir": str(data)}))
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    one_line(err, "train-labels-idx1-ubyte holds labels from 0 to 12; allowed: 0 to 9", "data fetch mnist")
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------ 7. the smaller items

@pytest.mark.parametrize("sections, parts", [
    ({"defense_args": {"enable_defense": True, "defense_type": "heterofl", "defense_params": {"steps": "1,2"}}},
     ["heterofl parameter 'steps': expected a list, e.g. [1, 2]", "got the text '1,2'"]),
    ({"defense_args": {"enable_defense": True, "defense_type": "heterofl", "defense_params": {"beta": "high"}}},
     ["heterofl parameter 'beta': expected a number (default 0.2)", "got the text 'high'"]),
    ({"attack_args": {"enable_attack": True, "attack_type": "alie", "byzantine_client_num": 1,
                      "attack_params": {"sign": "-1"}}},
     ["alie parameter 'sign': expected a number", "(a number in quotes is text: write -1 without quotes)"]),
    ({"train_args": {"learning_rate": "1e-3"}}, ["train_args.learning_rate: expected a number, got '1e-3'",
                                                  "(YAML reads 1e-3 as text: write 1.0e-3)"]),
])
def test_text_where_a_number_or_list_belongs_names_the_key(tmp_path, capsys, sections, parts):
    status, err = cli(capsys, "--cf", write(tmp_path, tiny(tmp_path, **sections)))
    assert status == 2
    one_line(err, *parts)
    assert not (tmp_path / "results").exists()


def test_learning_rate_written_as_yaml_text_gets_the_hint(tmp_path, capsys):
    text = yaml.safe_dump(tiny(tmp_path)).replace("batch_size: 16", "batch_size: 16\n  learning_rate: 1e-3")
    assert yaml.safe_load(text)["train_args"]["learning_rate"] == "1e-3"  # PyYAML: text, not a number
    status, err = cli(capsys, "--cf", write(tmp_path, text))
    assert status == 2
    one_line(err, "write 1.0e-3")


def test_more_clients_than_the_data_can_fill_names_real_keys(tmp_path, capsys, cached_data):
    cfg = tiny(tmp_path, train_args={"client_num_in_total": 100_000, "client_num_per_round": 3},
               data_args={"max_samples_per_client": None})
    status, err = cli(capsys, "--cf", write(tmp_path, cfg))
    assert status == 2
    line = one_line(err, "train_args.client_num_in_total", "from only 60000 samples; allowed: at most 6000 clients")
    assert "min_size" not in line


@pytest.mark.parametrize("key, value", [("best_acc", 1e308), ("final_acc", float("nan")), ("final_acc", -0.5),
                                        ("final_acc_task", "high")])
def test_report_skips_a_summary_with_an_impossible_accuracy(tmp_path, capsys, cached_data, caplog, key, value):
    assert cli(capsys, "--cf", write(tmp_path, tiny(tmp_path)))[0] == 0
    summary_path = tmp_path / "results" / "tiny" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary[key] = value
    summary_path.write_text(json.dumps(summary))  # NaN as json.dumps writes it
    assert cli_main(["report", str(tmp_path / "results")]) == 2  # its only run is skipped, with a warning
    one_line(capsys.readouterr().err, "no finished runs under")
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"skipping a damaged run: {summary_path}: {key} is {value!r}; allowed: an accuracy in [0, 1] or null"]


@pytest.mark.parametrize("target", ["nan", "-3", "0", "1.5"])
def test_report_refuses_a_target_that_is_no_accuracy(tmp_path, capsys, target):
    assert cli_main(["report", str(tmp_path), "--target", target]) == 2
    one_line(capsys.readouterr().err, f"--target: {float(target)} is not an accuracy; allowed: above 0, at most 1")


@needs_mpirun
def test_an_mpi_run_into_a_held_folder_is_one_line_from_rank_0(tmp_path):
    cfg = mpi_config(tmp_path, clients=4, per_round=2, f=0, rounds=1, attack=None, backend="MPI",
                     attack_args={"enable_attack": False})
    cfg["common_args"]["run_name"] = "held"
    folder = tmp_path / "MPI" / "held"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_mpi_cli(tmp_path, cfg, 3, timeout=240)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("fedml-heterofl run:") == 1
    assert f"{folder} is being written by another run (pid {holder.pid})" in proc.stderr
    assert not (folder / "config.yaml").exists()
