"""The locked install (requirements.lock, run/setup.sh's proof that it works), the versions a bug report
needs, and a grid that stops when a cell fails at an import."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedml_heterofl import environment
from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.simulation.runner import Simulation

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def test_lock_pins_every_distribution_exactly():
    text = LOCK.read_text()
    pins = environment.read_lock(text)
    requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    # every requirement line is an exact pin (no range, no URL), and nothing is listed twice
    assert len(pins) == len(requirement_lines) > 100
    assert all("==" in line and not any(op in line for op in ("<", ">", "~=", "@")) for line in requirement_lines)
    # what the set-up needs to run, pinned where the cause of the break of 2026-12-07 is
    assert pins["fedml"] == "0.9.6" and pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert int(pins["sentry-sdk"].split(".")[0]) < 3 and int(pins["numpy"].split(".")[0]) < 2
    assert 77 <= int(pins["setuptools"].split(".")[0]) < 81
    # made by the resolver from setup.py, as run/lock.sh runs it (never by hand)
    assert "pip-compile" in text and "--extra=test" in text and "--extra=mpi" in text and "--extra=plot" in text


def test_this_environment_is_the_lock():
    # the suite runs in the venv run/setup.sh made from the lock: every locked version is the installed one
    assert environment.lock_differences(environment.read_lock(LOCK.read_text()), environment.installed()) == []


def test_lock_differences_name_each_mismatch():
    lock = environment.read_lock("# header\nsentry-sdk==2.76.0\n    # via wandb\nFoo_Bar==1.0\nnumpy==1.26.4 ; python_version < '4'\n")
    assert lock == {"sentry-sdk": "2.76.0", "foo-bar": "1.0", "numpy": "1.26.4"}
    present = {"sentry-sdk": "3.0.0", "numpy": "1.26.4", "fedml-heterofl": "0.1.0"}
    assert environment.lock_differences(lock, present) == ["foo-bar missing (lock 1.0)", "sentry-sdk 3.0.0 (lock 2.76.0)"]
    assert environment.lock_differences(lock, {**present, "sentry-sdk": "2.76.0", "foo-bar": "1.0"}) == []


def _fake_site(tmp_path):
    """A folder that, first on PYTHONPATH, makes sentry_sdk the 3.0 one (no ``Hub``), as on 2026-12-07."""
    fake = tmp_path / "site"
    (fake / "sentry_sdk").mkdir(parents=True)
    (fake / "sentry_sdk" / "__init__.py").write_text("VERSION = '3.0.0'\nclass Client:\n    def __init__(self, *a, **k):\n        pass\n")
    return fake


def test_setup_check_names_what_broke_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_fake_site(tmp_path)), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "fedml_heterofl.environment", "--check", "--lock", str(LOCK)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[setup]")]
    assert len(lines) == 1, proc.stderr
    # the import that failed, the error, and the distribution whose code raised it
    assert lines[0].startswith("[setup] broken: import fedml failed: AttributeError:")
    assert "'sentry_sdk' has no attribute 'Hub'" in lines[0] and "raised in wandb 0.13.2, wandb/" in lines[0]


def test_setup_check_passes_here_and_reports_versions():
    proc = subprocess.run([sys.executable, "-m", "fedml_heterofl.environment", "--check", "--lock", str(LOCK)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[setup] ok: python 3.11") and "fedml 0.9.6" in proc.stdout
    assert "every distribution as in requirements.lock" in proc.stdout
    # the quiet "install needed?" test answers 0 here, 1 against a lock this venv does not satisfy
    assert subprocess.run([sys.executable, "-m", "fedml_heterofl.environment", "--lock", str(LOCK)],
                          cwd=ROOT, timeout=60).returncode == 0


def test_quiet_lock_test_fails_on_a_mismatch(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("fedml==0.0.1\n")
    assert environment.main(["--lock", str(lock)]) == 1


def test_version_and_env_print_what_a_bug_report_needs(capsys):
    import numpy
    import torch

    with pytest.raises(SystemExit) as stop:
        cli_main(["--version"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"python {sys.version.split()[0]}"
    assert f"torch {torch.__version__.split('+')[0]}" in lines and f"numpy {numpy.__version__}" in lines
    assert "fedml 0.9.6" in lines and "fedml_heterofl 0.1.0" in lines and any(l.startswith("mpi4py ") for l in lines)
    assert cli_main(["env"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:len(lines)] == lines and out[-1] == "requirements.lock: installed as locked"


def test_a_cell_failing_at_import_stops_the_grid(tmp_path, capsys, monkeypatch):
    # A dependency whose import raises (as wandb's did on sentry-sdk 3): the grid stops after that cell
    # with one line, instead of running the next cells on half-imported modules.
    (tmp_path / "broken_dependency.py").write_text("raise AttributeError(\"module 'sentry_sdk' has no attribute 'Hub'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = []

    def run(self, progress=True):
        calls.append(self)
        importlib.import_module("broken_dependency")

    monkeypatch.setattr(Simulation, "run", run)
    cfg = yaml.safe_load((ROOT / "config" / "mnist_lr.yaml").read_text())
    cfg["train_args"].update(client_num_in_total=3, client_num_per_round=3, comm_round=1)
    cfg["attack_args"].update(byzantine_client_num=1)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": "base.yaml", "results_dir": str(tmp_path / "grid"), "axes": {"seed": [0, 1, 2]}}))
    assert cli_main(["grid", "--cf", str(grid), "--no-progress"]) == 1
    assert len(calls) == 1  # the second and third cells never started
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fedml-heterofl")]
    assert err == ["fedml-heterofl grid: cell seed=0 stopped the grid: a module failed to import: AttributeError: "
                   "module 'sentry_sdk' has no attribute 'Hub' (raised in broken_dependency.py:1); 2 cells not run "
                   "(fix the install, e.g. bash run/setup.sh, and run the grid again)"]
