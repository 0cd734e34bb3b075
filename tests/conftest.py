"""Shared pytest set-up: every test that imports FedML gets a private HOME (FedML writes ~/.fedml);
``benchmark`` loads a script of benchmarks/ as a module."""
import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("FEDML_HETEROFL_QUIET", "1")
# Resolve the data root against the real HOME before the fixture below replaces HOME.
os.environ.setdefault("FEDML_HETEROFL_DATA", os.path.expanduser("~/.cache/fedml_heterofl"))


@pytest.fixture(scope="session", autouse=True)
def _private_home():
    """Keep FedML's ~/.fedml writes inside a temporary folder for the whole session."""
    old = os.environ.get("HOME")
    with tempfile.TemporaryDirectory(prefix="fedml_home_") as home:
        os.environ["HOME"] = home
        yield home
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture
def benchmark():
    """``benchmark(name)``: the module ``benchmarks/<name>.py`` (benchmarks/ is not a package)."""
    def load(name):
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture
def fresh_fedml_singletons():
    """FedML's security/DP/FHE singletons live for the process: the test starts from new ones and leaves
    none behind."""
    from fedml.core.dp.fedml_differential_privacy import FedMLDifferentialPrivacy
    from fedml.core.fhe.fhe_agg import FedMLFHE
    from fedml.core.security.fedml_attacker import FedMLAttacker
    from fedml.core.security.fedml_defender import FedMLDefender

    def reset():
        FedMLDefender._defender_instance = None
        FedMLAttacker._attacker_instance = None
        FedMLDifferentialPrivacy._dp_instance = None
        FedMLFHE._fhe_instance = None

    reset()
    yield
    reset()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one and never required by CI "
                                       "(run on a GPU machine with `pytest -m gpu`)")
