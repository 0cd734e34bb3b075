"""FedML's platform tooling, offline: `fedml build` packages made by run/fedml_build.sh contain our entry
point, package and config and run from the unzipped package; `fedml launch job.yaml` builds its package
(FedML's own prepare_launch) with our job and bootstrap commands and without ignored folders."""
import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from fedml_heterofl.settings import load_settings, settings_from_dict

ROOT = Path(__file__).resolve().parent.parent
FEDML_BIN = str(Path(sys.executable).parent / "fedml")


def _tiny_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(open(ROOT / "config" / "mnist_lr.yaml"))
    cfg["common_args"]["results_dir"] = str(tmp_path / "results")
    cfg["train_args"].update(client_num_in_total=3, client_num_per_round=3, comm_round=2, batch_size=64)
    cfg["attack_args"].update(attack_type="sign_flip", byzantine_client_num=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fedml_build_packages_hold_entry_point_package_and_config_and_run(tmp_path):
    config = _tiny_config(tmp_path)
    out = subprocess.run(["bash", "run/fedml_build.sh", str(config), str(tmp_path / "dist")], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "FEDML_BIN": FEDML_BIN}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for kind in ("client", "server"):
        with zipfile.ZipFile(tmp_path / "dist" / "dist-packages" / f"{kind}-package.zip") as zf:
            names = set(zf.namelist())
            top = f"{kind}-package/fedml/"
            assert {top + "fedml_entry.py", top + "fedml_heterofl/defense/heterofl.py",
                    top + "fedml_heterofl/cli.py", top + "config/fedml_config.yaml"} <= names
            assert not any("__pycache__" in n for n in names)
            assert yaml.safe_load(zf.read(top + "config/fedml_config.yaml")) == yaml.safe_load(config.read_text())
            conf = yaml.safe_load(zf.read(f"{kind}-package/conf/fedml.yaml"))
            assert conf["entry_config"] == {"entry_file": "fedml/fedml_entry.py",
                                            "conf_file": "config/fedml_config.yaml", "package_type": "default"}
            if kind == "client":
                zf.extractall(tmp_path / "unzipped")
    # Start it as the platform does, from the unzipped package, with the platform's extra arguments.
    pkg = tmp_path / "unzipped" / "client-package"
    run = subprocess.run([sys.executable, "fedml/fedml_entry.py", "--cf", "fedml/config/fedml_config.yaml",
                          "--rank", "1", "--role", "client", "--run_id", "7"], cwd=pkg, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"fedml_heterofl from {pkg / 'fedml' / 'fedml_heterofl'}" in run.stderr  # the packaged copy ran
    assert "--rank 1 --role client --run_id 7" in run.stderr
    summaries = list((tmp_path / "results").glob("*/summary.json"))
    assert len(summaries) == 1 and yaml.safe_load(summaries[0].read_text())["rounds"] == 2


def test_fedml_build_recipe_rejects_a_missing_config(tmp_path):
    out = subprocess.run(["bash", "run/fedml_build.sh", str(tmp_path / "nope.yaml"), str(tmp_path / "d")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "FEDML_BIN": FEDML_BIN})
    assert out.returncode == 2 and "nope.yaml not found" in out.stderr


LAUNCH = """
import sys
from fedml.computing.scheduler.scheduler_entry.launch_manager import FedMLLaunchManager
_, _, client, _ = FedMLLaunchManager.get_instance().prepare_launch(sys.argv[1])
print(client)
"""


def test_fedml_launch_builds_the_job_package_offline(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(ROOT, ws, ignore=shutil.ignore_patterns(".git", ".venv", "results", "logs", "dist",
                                                             "__pycache__", ".pytest_cache"))
    for ignored in (".venv/marker.txt", "results/run/marker.txt"):  # .gitignore'd: must not be packaged
        (ws / ignored).parent.mkdir(parents=True, exist_ok=True)
        (ws / ignored).write_text("x")
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", LAUNCH, str(ws / "job.yaml")], cwd=ws, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    job = yaml.safe_load((ROOT / "job.yaml").read_text())
    with zipfile.ZipFile(out.stdout.strip().splitlines()[-1]) as zf:
        names = set(zf.namelist())
        top = "client-package/fedml/"
        assert {top + "job.yaml", top + "run/setup.sh", top + "setup.py", top + "fedml_heterofl/__init__.py",
                top + "config/fedml_config.yaml"} <= names
        assert not any("/.venv/" in n or "/results/" in n for n in names)
        assert zf.read(top + "fedml_job_entry_pack.sh").decode() == job["job"]
        assert zf.read(top + "fedml_bootstrap_generated.sh").decode() == job["bootstrap"]
        packaged = settings_from_dict(yaml.safe_load(zf.read(top + "config/fedml_config.yaml")))
    # the config the job runs is config/mnist_lr.yaml's, plus FedML's environment_args.bootstrap
    expected = load_settings(str(ROOT / "config" / "mnist_lr.yaml"))
    assert packaged.passthrough["environment_args"] == {"bootstrap": "fedml_bootstrap_generated.sh"}
    assert dataclasses.replace(packaged, passthrough={}) == expected
