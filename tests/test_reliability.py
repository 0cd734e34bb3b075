"""What a careless user, a bad disk or an extreme update does (issue 15): every finding is either
correct behaviour or one line on stderr naming the key or file, exit status 2, no traceback.

Runs are tiny (3 MNIST clients, 30 samples each, LR); the MNIST arrays are loaded once per session
(:func:`cached_data`) so each run costs well under a second.
"""
import errno
import inspect
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import fedml_heterofl.simulation.workload as workload_module
from fedml_heterofl import components
from fedml_heterofl.attack import build_attack
from fedml_heterofl.attack.gamma_search import perturbation
from fedml_heterofl.attack.min_sum import MinSum
from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.defense import build_defense
from fedml_heterofl.fingerprint import fingerprint
from fedml_heterofl.settings import IDENTITY_EXCLUDED, SettingsError, settings_from_dict
from fedml_heterofl.simulation.runner import Simulation

ROOT = Path(__file__).resolve().parent.parent
_DATA = {}


@pytest.fixture
def cached_data(monkeypatch):
    """The workload's dataset loader, memoised for the session (the arrays are read-only to a run);
    ``cached_data.calls`` counts the loads asked for in this test."""
    real = workload_module.load_dataset

    def load(name, **kwargs):
        load.calls += 1
        key = (name, tuple(sorted(kwargs.items())))
        if key not in _DATA:
            _DATA[key] = real(name, **kwargs)
        return _DATA[key]

    load.calls = 0
    monkeypatch.setattr(workload_module, "load_dataset", load)
    return load


def tiny(tmp_path, **sections):
    """A 3-client MNIST/LR FedAvg run of 2 rounds, results under ``tmp_path/results``."""
    cfg = {
        "common_args": {"random_seed": 1, "results_dir": str(tmp_path / "results"), "run_name": "tiny"},
        "data_args": {"dataset": "mnist", "max_samples_per_client": 30},
        "model_args": {"model": "lr"},
        "train_args": {"client_num_in_total": 3, "client_num_per_round": 3, "comm_round": 2, "batch_size": 16},
        "defense_args": {"enable_defense": False},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write(tmp_path, cfg, name="c.yaml"):
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def cli(capsys, *argv):
    """``(exit status, stderr)`` of ``fedml-heterofl run --cf ... --no-progress`` run in this process."""
    status = cli_main(["run", "--no-progress", *map(str, argv)])
    return status, capsys.readouterr().err


def one_line(err, *parts):
    """stderr is exactly one line, without a traceback, holding every part."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def metrics(run_dir):
    return (Path(run_dir) / "metrics.csv").read_text()


# -- configuration files and keys ---------------------------------------------------------------
@pytest.mark.parametrize("text, part", [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("[1, 2]\n", "must be a mapping of sections"),
    ("just text\n", "must be a mapping of sections"),
    ("data_args: {dataset: mnist}\n", "model_args.model: required"),
    ("data_args: [mnist]\nmodel_args: {model: lr}\n", "data_args: must be a mapping"),
    ("\xff\xfe\x00", "not a text file"),
])
def test_empty_and_non_mapping_files_are_refused(tmp_path, capsys, monkeypatch, text, part):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1"))
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    one_line(err, str(path), part)
    assert os.listdir(tmp_path) == ["c.yaml"]  # nothing ran: no ./results


@pytest.mark.parametrize("section, key, value, part", [
    ("train_args", "learning_rate", math.inf, "train_args.learning_rate: must be a finite number, got inf"),
    ("train_args", "learning_rate", math.nan, "train_args.learning_rate: must be a finite number, got nan"),
    ("train_args", "learning_rate", 0.0, "train_args.learning_rate: must be > 0"),
    ("train_args", "momentum", 1.0, "train_args.momentum: must be >= 0 and < 1, got 1.0"),
    ("train_args", "momentum", -0.5, "train_args.momentum: must be >= 0 and < 1"),
    ("train_args", "weight_decay", -math.inf, "train_args.weight_decay: must be a finite number"),
    ("train_args", "batch_size", 2**63, "train_args.batch_size: 9223372036854775808 does not fit a 64-bit integer"),
    ("train_args", "epochs", 0, "train_args.epochs: must be >= 1, got 0"),
    ("train_args", "client_optimizer", "adam", "train_args.client_optimizer: 'adam' is not allowed; allowed: sgd"),
    ("data_args", "partition_alpha", math.nan, "data_args.partition_alpha: must be a finite number, got nan"),
    ("data_args", "partition_alpha", 0.001, "data_args.partition_alpha: must be >= 0.01, got 0.001"),
    ("data_args", "trigger_size", 10_001, "data_args.trigger_size: must be >= 1 and <= 10000"),
    ("data_args", "partition_method", "natural", "data_args.partition_method: 'natural' needs a dataset with natural"),
    ("common_args", "random_seed", -1, "common_args.random_seed: must be >= 0 and <= 4294967295, got -1"),
    ("common_args", "random_seed", 2**32, "common_args.random_seed: must be >= 0 and <= 4294967295"),
    ("device_args", "gpu_id", -1, "device_args.gpu_id: must be >= 0"),
    ("model_args", "model", "transformer", "model_args.model: 'transformer' is not allowed; allowed: lr, cnn"),
    ("model_args", "model", "rnn", "model_args.model: 'rnn' does not take mnist inputs; allowed for mnist: lr, cnn"),
    ("defense_args", "defense_params", {"lam": math.nan}, "defense_args.defense_params.lam: must be a finite number"),
    ("defense_args", "defense_params", {"steps": [1, math.inf]}, "defense_args.defense_params.steps[1]: must be a"),
    ("defense_args", "defense_params", {"betta": 0.2}, "defense_args.defense_params: heterofl has no parameter "
                                                      "'betta'; allowed: steps, beta, lam"),
    ("defense_args", "defense_params", {"steps": 3}, "defense_args.defense_params: heterofl parameter 'steps': "
                                                     "expected a list, e.g. [1, 2] (default (1, 2, 3, 4)), got 3"),
    ("defense_args", "defense_params", {"steps": [1.5, 2]}, "defense_args.defense_params: steps must be a list of "
                                                           "distinct values from [1, 2, 3, 4], got [1.5, 2]"),
    ("defense_args", "defense_params", {"steps": [True, 2]}, "steps must be a list of distinct values from "
                                                            "[1, 2, 3, 4], got [True, 2]"),
    ("defense_args", "defense_params", {"steps": [2, 2]}, "steps must be a list of distinct values"),
    ("defense_args", "defense_params", {"steps": [[1], 2]}, "steps must be a list of distinct values from "
                                                           "[1, 2, 3, 4], got [[1], 2]"),
    ("defense_args", "defense_params", {"lam": [1.0]}, "heterofl parameter 'lam': expected a number (default "
                                                      "-5.0), got [1.0]"),
    ("defense_args", "defense_params", {"lam": True}, "heterofl parameter 'lam': expected a number"),
    ("defense_args", "defense_params", {"exclude_self": 1}, "heterofl parameter 'exclude_self': expected true or "
                                                           "false (default True), got 1"),
    ("attack_args", "attack_params", {"gamma_init": math.inf}, "attack_args.attack_params.gamma_init: must be a "
                                                               "finite number"),
    ("attack_args", "attack_params", {"bond": "max"}, "attack_args.attack_params: min_sum has no parameter 'bond'; "
                                                      "allowed: bound, perturbation, gamma_init, tau, knowledge"),
])
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, cached_data, section, key, value, part):
    cfg = tiny(tmp_path, defense_args={"enable_defense": True, "defense_type": "heterofl"},
               attack_args={"enable_attack": True, "attack_type": "min_sum", "byzantine_client_num": 1})
    cfg.setdefault(section, {})[key] = value
    with pytest.raises(SettingsError) as info:
        settings_from_dict(cfg)
    assert part in str(info.value) and "\n" not in str(info.value)
    assert cached_data.calls == 0  # refused before any data is read


def test_min_sum_takes_its_own_and_its_templates_parameters():
    # MinSum(bound, **kwargs) passes kwargs to ConstrainedMeanAttack(perturbation, gamma_init, tau, knowledge)
    assert components.accepted_parameters(MinSum) == ("bound", "perturbation", "gamma_init", "tau", "knowledge")


def test_label_flips_class_count_is_the_datasets(tmp_path):
    cfg = tiny(tmp_path, attack_args={"enable_attack": True, "attack_type": "label_flip", "byzantine_client_num": 1,
                                      "attack_params": {"num_classes": 3}})
    with pytest.raises(SettingsError, match="num_classes is the dataset's number of classes, 10; got 3"):
        settings_from_dict(cfg)


@pytest.mark.parametrize("name", ["../../somewhere", "..", ".", "a/b", "a\\b", "x\ny", " padded", "n" * 256])
def test_run_name_must_be_a_plain_name(tmp_path, name):
    with pytest.raises(SettingsError, match="common_args.run_name: .* is not a plain folder name"):
        settings_from_dict(tiny(tmp_path, common_args={"run_name": name}))


@pytest.mark.parametrize("name", ["seed=0,defense=heterofl,attack=min_max", "run-1.5", "heterofl λ=-2"])
def test_grid_style_run_names_are_plain(tmp_path, name):
    assert settings_from_dict(tiny(tmp_path, common_args={"run_name": name})).common_args.run_name == name


def test_the_cli_process_reports_one_line(tmp_path):
    """The real process: exit status 2 and one stderr line for a finding of each kind."""
    cases = {"": "the file is empty", "data_args: {dataset: mnist}\nmodel_args: {model: lr}\n"
             "train_args: {learning_rate: .inf}\n": "train_args.learning_rate: must be a finite number"}
    env = {k: v for k, v in os.environ.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")}
    for i, (text, part) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "fedml_heterofl", "--cf", str(path)], capture_output=True,
                              text=True, env=env, cwd=tmp_path)
        assert proc.returncode == 2
        one_line(proc.stderr, str(path), part)
    assert not (tmp_path / "results").exists()


# -- run identity -----------------------------------------------------------------------------------
def test_identity_tells_every_value_apart(tmp_path):
    assert fingerprint({"lr": math.nan}) != fingerprint({"lr": math.inf}) != fingerprint({"lr": None})
    assert fingerprint({"x": 1}) != fingerprint({"x": 1.0}) and fingerprint({"x": 0.0}) != fingerprint({"x": -0.0})
    assert fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})  # key order does not count
    base = settings_from_dict(tiny(tmp_path))
    nudged = tiny(tmp_path, train_args={"learning_rate": math.nextafter(0.1, 1.0)})  # the next float after 0.1
    assert settings_from_dict(nudged).identity != base.identity
    moved = tiny(tmp_path, common_args={"results_dir": "elsewhere", "run_name": "other"})
    assert ("common_args", "results_dir") in IDENTITY_EXCLUDED
    assert settings_from_dict(moved).identity == base.identity  # place and name are not part of it


def test_other_settings_never_resume_a_checkpoint(tmp_path, capsys, cached_data):
    Simulation(settings_from_dict(tiny(tmp_path)), fresh=False).run(progress=False)
    path = write(tmp_path, tiny(tmp_path, train_args={"learning_rate": 0.1000000001}))
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    one_line(err, str(tmp_path / "results" / "tiny"), "holds a run with other settings", "--fresh")
    assert cli(capsys, "--cf", path, "--fresh")[0] == 0  # --fresh starts the other settings over


# -- results folder ---------------------------------------------------------------------------------
def immutable_folder(path):
    """A folder this process cannot write into (chmod, or chattr +i for root), or None."""
    path.mkdir()
    path.chmod(0o555)
    if os.access(path, os.W_OK) and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / "probe").touch()
    except OSError:
        return path
    (path / "probe").unlink()
    return None


def test_unwritable_results_folder_is_one_line_before_any_work(tmp_path, capsys, cached_data):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    places = {str(blocker): "is a file, not a folder", "/proc/fedml_heterofl": "cannot write into /proc"}
    locked = immutable_folder(tmp_path / "locked")
    if locked is not None:
        places[str(locked)] = f"cannot write into {locked}"
    try:
        for place, part in places.items():
            status, err = cli(capsys, "--cf", write(tmp_path, tiny(tmp_path, common_args={"results_dir": place})))
            assert status == 2
            one_line(err, part)
    finally:
        if locked is not None:
            subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
            locked.chmod(0o755)
    assert cached_data.calls == 0


def test_a_disk_that_fails_mid_run_loses_nothing(tmp_path, capsys, cached_data, monkeypatch):
    cfg = tiny(tmp_path, train_args={"comm_round": 3})
    path = write(tmp_path, cfg)
    real_replace, writes = os.replace, []

    def replace(src, dst):
        if Path(dst).name == "checkpoint.pt":
            writes.append(dst)
            if len(writes) == 2:  # the disk turns read-only when round 1 is saved
                raise OSError(errno.EROFS, "Read-only file system")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    run = tmp_path / "results" / "tiny"
    one_line(err, f"cannot write {run / 'checkpoint.pt'}: Read-only file system")
    monkeypatch.setattr(os, "replace", real_replace)
    assert cli(capsys, "--cf", path)[0] == 0  # resumes after round 0
    Simulation(settings_from_dict(cfg), results_dir=str(tmp_path / "whole")).run(progress=False)
    assert metrics(run).count("\n") == 4 and _accuracies(run) == _accuracies(tmp_path / "whole" / "tiny")


def _accuracies(run):
    rows = metrics(run).splitlines()
    column = rows[0].split(",").index("test_acc")
    return [row.split(",")[column] for row in rows[1:]]


# -- checkpoints ------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"", b"\x00" * 64, os.urandom(4096)], ids=["empty", "zeros", "random"])
def test_a_damaged_checkpoint_names_the_file_and_offers_fresh(tmp_path, capsys, cached_data, damage):
    path = write(tmp_path, tiny(tmp_path, train_args={"comm_round": 1}))
    assert cli(capsys, "--cf", path)[0] == 0
    checkpoint = tmp_path / "results" / "tiny" / "checkpoint.pt"
    checkpoint.write_bytes(damage)
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    line = one_line(err, f"{checkpoint} is damaged", "--fresh")
    assert "weights_only" not in line
    assert cli(capsys, "--cf", path, "--fresh")[0] == 0


def test_a_truncated_checkpoint_resumes_from_the_previous_one(tmp_path, capsys, cached_data, caplog):
    path = write(tmp_path, tiny(tmp_path))
    assert cli(capsys, "--cf", path)[0] == 0
    run = tmp_path / "results" / "tiny"
    before = _accuracies(run)
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert cli(capsys, "--cf", path)[0] == 0  # round 1 is trained again from the round-0 checkpoint
    assert f"{checkpoint} is damaged" in caplog.text and "resuming from the previous checkpoint" in caplog.text
    assert _accuracies(run) == before


# -- start-up --------------------------------------------------------------------------------------
def test_mpi_without_mpirun_is_one_line(tmp_path, capsys):
    path = write(tmp_path, tiny(tmp_path, common_args={"training_type": "cross_silo"}, comm_args={"backend": "MPI"}))
    status, err = cli(capsys, "--cf", path)
    assert status == 2
    one_line(err, "comm_args.backend: MPI runs a server and worker processes under mpirun",
             "mpirun -np N fedml-heterofl run --cf CONFIG", "N from 2 to 4 (this job has 1 process)")


@pytest.mark.parametrize("sections, part", [
    ({"defense_args": {"enable_defense": True, "defense_type": "multikrum"},
      "attack_args": {"enable_attack": True, "attack_type": "sign_flip", "byzantine_client_num": 1}},
     "Multi-Krum requires n >= 2f + 3; got n=3 updates and f=1"),
    ({"defense_args": {"enable_defense": True, "defense_type": "zeno", "defense_params": {"b": 3}}},
     "Zeno drops b=3 updates and needs b < n; got n=3"),
    ({"attack_args": {"enable_attack": True, "attack_type": "min_max", "byzantine_client_num": 1,
                      "attack_params": {"knowledge": "partial"}}},
     "the 'std' perturbation needs at least 2 known benign updates, got 1"),
])
def test_rules_that_cannot_work_with_n_and_f_fail_before_the_data(tmp_path, capsys, cached_data, sections, part):
    status, err = cli(capsys, "--cf", write(tmp_path, tiny(tmp_path, **sections)))
    assert status == 2
    one_line(err, "defense_args/attack_args with n=3 clients per round", part)
    assert cached_data.calls == 0 and not (tmp_path / "results").exists()


def test_a_failing_start_leaves_no_folder_and_run_log_holds_the_run(tmp_path, capsys, cached_data, caplog):
    empty = tmp_path / "no_data"
    empty.mkdir()
    status, err = cli(capsys, "--cf", write(tmp_path, tiny(tmp_path, data_args={"data_cache_dir": str(empty)})))
    assert status == 2
    one_line(err, "fedml-heterofl data fetch mnist")
    assert not (tmp_path / "results").exists()
    caplog.set_level("INFO", logger="fedml_heterofl")  # as the CLI sets it up (pytest owns the root logger)
    assert cli(capsys, "--cf", write(tmp_path, tiny(tmp_path)))[0] == 0
    log = (tmp_path / "results" / "tiny" / "run.log").read_text()
    assert "INFO" in log and "mnist/lr, fedavg vs no attack, 3 clients" in log and "finished: final accuracy" in log


def test_training_that_overflows_from_the_start_names_the_learning_rate(tmp_path, cached_data):
    simulation = Simulation(settings_from_dict(tiny(tmp_path, train_args={"learning_rate": 3e38})))
    with pytest.raises(SettingsError, match=r"train_args.learning_rate: local training from the initial model "
                                            r"overflowed on every client in round 0 \(learning_rate=3e\+38"):
        simulation.run(progress=False)


# -- attacks on huge updates --------------------------------------------------------------------------
def huge_round(norm, seed=0):
    """8 benign rows and 2 attacker rows of d = 64; benign row 3 scaled to ``norm``."""
    g = torch.Generator().manual_seed(seed)
    benign, own = torch.randn(8, 64, generator=g), torch.randn(2, 64, generator=g)
    benign[3] = (benign[3].double() * (norm / benign[3].double().norm())).float()
    assert math.isfinite(float(benign[3].abs().max()))
    return benign, own


@pytest.mark.parametrize("norm", [1e20, 1e30])
@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_max_and_min_sum_stay_finite_and_feasible_for_huge_rows(norm, name, kind):
    benign, own = huge_round(norm)
    attack = build_attack(name, perturbation=kind)
    out = attack.attack(benign, own)
    assert out.shape == own.shape and bool(torch.isfinite(out).all())
    # the constraint, recomputed in float64 from the output (NDSS'21 §4.3; Min-Sum's default bound: min),
    # over the reference set of full knowledge: the benign rows
    R, m = benign.double(), out[0].double()
    to_m = ((R - m) ** 2).sum(dim=1)
    pairwise = torch.cdist(R, R) ** 2
    value, bound = (to_m.max(), pairwise.max()) if name == "min_max" else (to_m.sum(), pairwise.sum(dim=1).min())
    assert float(value) <= float(bound) * (1 + 1e-6)


@pytest.mark.parametrize("norm", [1e20, 1e30])
@pytest.mark.parametrize("rule", ["fedavg", "median"])
def test_the_adaptive_attack_stays_finite_for_huge_rows(norm, rule):
    benign, own = huge_round(norm)
    out = build_attack("adaptive").attack(benign, own, defense=build_defense(rule))
    assert out.shape == own.shape and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("norm", [1e20, 1e30])
def test_the_std_perturbation_of_huge_rows_is_the_float64_std(norm):
    R = torch.cat(huge_round(norm))
    assert torch.allclose(-perturbation(R, "std").double(), R.double().std(dim=0), rtol=1e-5, atol=0)
    unit = perturbation(R, "unit_vec").double()
    assert torch.allclose(unit, -R.double().mean(dim=0) / R.double().mean(dim=0).norm(), rtol=1e-5, atol=1e-12)


def test_a_std_beyond_float32_is_a_value_error_naming_the_rows():
    R = torch.tensor([[3e38] * 4, [-3e38] * 4])  # mean 0, unbiased std sqrt(2 * 9e76) = 4.2e38 > 3.4e38
    with pytest.raises(ValueError, match=r"exceeds float32's range: rows \[0, 1\] of the known updates"):
        perturbation(R, "std")
    with pytest.raises(ValueError, match=r"rows \[0, 1\]"):
        build_attack("min_max", knowledge="full_with_own").attack(R[:1], R[1:])


def test_unknown_parameters_are_listed_against_the_class_signature(tmp_path):
    HeteroFL = type(build_defense("heterofl"))
    cfg = tiny(tmp_path, defense_args={"enable_defense": True, "defense_type": "heterofl",
                                       "defense_params": {"betta": 0.2}})
    with pytest.raises(SettingsError) as info:
        settings_from_dict(cfg)
    assert str(info.value).endswith("allowed: " + ", ".join(inspect.signature(HeteroFL).parameters))
