"""What is installed, and whether it works: the versions a bug report needs (``fedml-heterofl env``,
``fedml-heterofl --version``) and the set-up's proof that the entry points import
(``python -m fedml_heterofl.environment --check``, run by ``run/setup.sh``).

Standard library only at import time, so it runs where torch or FedML are broken. The lock is
``requirements.lock`` at the repository root (``bash run/lock.sh`` makes it; README, "Development").
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

#: the distributions whose versions a bug report needs, in the order printed
REPORTED = ("fedml_heterofl", "torch", "fedml", "numpy", "mpi4py")

#: what the set-up imports to prove it works: our entry points (each imports its layer's dependencies:
#: the bridge imports FedML, and with it wandb, boto3, SQLAlchemy, ...) and the extras' libraries
ENTRY_POINTS = (
    "torch",
    "fedml",
    "fedml_heterofl.cli",
    "fedml_heterofl.simulation.runner",
    "fedml_heterofl.fedml_bridge",
    "fedml_heterofl.experiments.grid",
    "fedml_heterofl.experiments.publish",
    "matplotlib.pyplot",
)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503's normalised distribution name (``Sentry_SDK`` -> ``sentry-sdk``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> Dict[str, str]:
    """``{canonical name: version}`` of the ``NAME==VERSION`` lines of a pip-compile lock file."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> Dict[str, str]:
    """``{canonical name: version}`` of every distribution importable from this interpreter."""
    found: Dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def lock_differences(lock: Mapping[str, str], present: Mapping[str, str]) -> List[str]:
    """Where ``present`` (installed versions) differs from ``lock``, one phrase each, sorted by name:
    ``NAME VERSION (lock LOCKED)`` or ``NAME missing (lock LOCKED)``. Distributions not in the lock
    (our own package, pip, a tool installed by hand) are not differences."""
    out = []
    for name in sorted(lock):
        have = present.get(name)
        if have is None:
            out.append(f"{name} missing (lock {lock[name]})")
        elif have != lock[name]:
            out.append(f"{name} {have} (lock {lock[name]})")
    return out


def version_of(name: str) -> str:
    """The installed version of distribution ``name``, or ``not installed``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def version_lines() -> List[str]:
    """``NAME VERSION`` for Python and each of :data:`REPORTED`: what a bug report needs."""
    return [f"python {sys.version.split()[0]}"] + [f"{name} {version_of(name)}" for name in REPORTED]


def _distribution_of(module: str) -> Optional[str]:
    """``NAME VERSION`` of the distribution that provides top-level module ``module``, if any."""
    names = metadata.packages_distributions().get(module.split(".")[0])
    return f"{names[0]} {version_of(names[0])}" if names else None


def raised_where(exc: BaseException) -> str:
    """Where ``exc`` was raised, as a user can find it: ``DISTRIBUTION VERSION, path/in/site-packages.py:LINE``
    for an installed distribution's file, else ``file.py:LINE`` (empty when the traceback is empty)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<"):  # importlib's own frames
            continue
        path = Path(frame.filename)
        where = next((str(Path(*path.parts[i + 1:])) for i, part in enumerate(path.parts)
                      if part in ("site-packages", "dist-packages")), path.name)
        owner = _distribution_of(where.split(os.sep)[0].removesuffix(".py"))
        return f"{owner + ', ' if owner else ''}{where}:{frame.lineno}"
    return ""


def failed_at_import(exc: BaseException) -> bool:
    """Whether ``exc`` came from importing a module: an ``ImportError``, or raised while a module's
    top-level code ran (a ``<module>`` frame in its traceback, e.g. wandb's ``sentry_sdk.Hub`` call)."""
    return isinstance(exc, ImportError) or any(
        frame.name == "<module>" for frame in traceback.extract_tb(exc.__traceback__))


def import_failure(module: str, exc: BaseException) -> str:
    """One line on why ``import module`` raised ``exc``: the error and :func:`raised_where`, e.g.
    ``import fedml failed: AttributeError: module 'sentry_sdk' has no attribute 'Hub' (raised in
    wandb 0.13.2, wandb/util.py:52)``."""
    message = " ".join(str(exc).split()) or "(no message)"
    where = raised_where(exc)
    return f"import {module} failed: {type(exc).__name__}: {message}" + (f" (raised in {where})" if where else "")


def check_imports(modules: Sequence[str]) -> Optional[str]:
    """Import each of ``modules``; None when all import, else :func:`import_failure`'s line for the
    first that fails."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any error at import: that is what the check is for
            return import_failure(module, exc)
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fedml_heterofl.environment [--lock FILE] [--check] [--mpi]``.

    ``--lock FILE`` with nothing else: exit 0 when the installed versions equal the lock's, else 1
    (quietly: the set-up's "install needed?" test). ``--check``: import :data:`ENTRY_POINTS` (and
    ``mpi4py.MPI`` with ``--mpi``), then print one ``ok`` line with the versions; when an import fails
    or the installed versions differ from the lock, print one line naming both on stderr and exit 1.
    """
    parser = argparse.ArgumentParser(prog="python -m fedml_heterofl.environment")
    parser.add_argument("--lock", type=Path, help="requirements.lock to compare the installed versions with")
    parser.add_argument("--check", action="store_true", help="import the entry points and report")
    parser.add_argument("--mpi", action="store_true", help="also import mpi4py.MPI (MPI is installed)")
    args = parser.parse_args(argv)
    differences = lock_differences(read_lock(args.lock.read_text()), installed()) if args.lock else []
    if not args.check:
        return 1 if differences else 0
    failure = check_imports([*ENTRY_POINTS, *(["mpi4py.MPI"] if args.mpi else [])])
    differs = f"installed differs from {args.lock.name}: {', '.join(differences)}" if differences else ""
    if failure or differs:
        print(f"[setup] broken: {'; '.join(filter(None, (failure, differs)))}", file=sys.stderr)
        return 1
    lock_note = f"; every distribution as in {args.lock.name}" if args.lock else ""
    print(f"[setup] ok: {', '.join(version_lines())}{lock_note}")
    return 0


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    """``fedml-heterofl env``: no options."""


def main_env(args: argparse.Namespace) -> int:
    """``fedml-heterofl env``: the versions a bug report needs, one per line, and where the installed
    distributions differ from the repository's ``requirements.lock`` (when run from a checkout)."""
    for line in version_lines():
        print(line)
    lock = Path(__file__).resolve().parent.parent / "requirements.lock"
    if lock.is_file():
        differences = lock_differences(read_lock(lock.read_text()), installed())
        print(f"requirements.lock: {'differs: ' + ', '.join(differences) if differences else 'installed as locked'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
