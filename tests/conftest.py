"""Shared pytest set-up: every test that imports FedML gets a private HOME (FedML writes ~/.fedml)."""
import os
import tempfile

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
