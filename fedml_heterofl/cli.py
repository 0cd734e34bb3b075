"""The ``fedml-heterofl`` command: ``run | grid | report | summary | archive | recheck | data | defenses | attacks |
env``
(and ``--version``; benchmarks: ``benchmarks/*.py``).

Each subcommand lives in the module that owns its work and exposes ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches, importing the module lazily (``import fedml``
alone takes seconds, and ``data`` or ``report`` never need it). A subcommand reports a problem the
user can fix with :func:`~fedml_heterofl.messages.report_error`: one line on stderr, exit status 2, no traceback. Any other
error is one line too, with exit status 1; ``--debug`` (or ``FEDML_HETEROFL_DEBUG=1``) shows the
tracebacks. Warnings that other packages raise while FedML's dependencies import (``pkg_resources``,
``requests``, pydantic and SQLAlchemy deprecations) are silenced here, for the command only.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import List, Optional

from fedml_heterofl.environment import version_lines
from fedml_heterofl.messages import DEBUG_ENV, debug, one_line

#: subcommand -> (module, one-line help)
COMMANDS = {
    "run": ("fedml_heterofl.backends", "run one experiment from a FedML YAML (--cf)"),
    "grid": ("fedml_heterofl.experiments.grid", "run a grid of experiments, resumable"),
    "report": ("fedml_heterofl.experiments.publish", "tables and plots from result folders"),
    "summary": ("fedml_heterofl.experiments.summary", "one summary row per Table I folder (docs/results.md)"),
    "archive": ("fedml_heterofl.experiments.archive", "copy finished runs' small files to a tracked folder"),
    "recheck": ("fedml_heterofl.experiments.recheck", "rerun archived runs' first rounds and compare their metrics"),
    "data": ("fedml_heterofl.data.cli", "fetch and inspect datasets"),
    "defenses": ("fedml_heterofl.catalog", "list the defenses: ours and FedML's own (fedml:NAME)"),
    "attacks": ("fedml_heterofl.catalog:attacks", "list the attacks"),
    "env": ("fedml_heterofl.environment:env", "versions of Python, torch, FedML, numpy, mpi4py (for bug reports)"),
}


#: modules whose warnings the command silences (module doc): FedML and what it imports
THIRD_PARTY_WARNINGS = r"(fedml|requests|pkg_resources|setuptools|sqlalchemy|pydantic|wandb|google)(\.|$)"


class _Command:
    """A subcommand's ``add_arguments``/``main``: the module's own, or ``add_<variant>_arguments`` /
    ``main_<variant>`` for a ``module:variant`` entry (two subcommands in one module)."""

    def __init__(self, module: object, variant: str = "") -> None:
        self.add_arguments = getattr(module, f"add_{variant}_arguments" if variant else "add_arguments")
        self.main = getattr(module, f"main_{variant}" if variant else "main")


def main(argv: Optional[List[str]] = None) -> int:
    warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNINGS)  # before a subcommand's imports
    argv = list(sys.argv[1:] if argv is None else argv)
    # FedML's convention `python -m fedml_heterofl --cf config.yaml` means `run --cf config.yaml`.
    if argv and argv[0] in ("--cf", "--yaml_config_file"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(prog="fedml-heterofl", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # --version's lines
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also {DEBUG_ENV}=1)")
    parser.add_argument("--version", action="version", version="\n".join(version_lines()),
                        help="print the versions of fedml_heterofl, Python, torch, FedML, numpy and mpi4py")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # options before it are global
    modules = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=f"show tracebacks (also {DEBUG_ENV}=1)")
        if name == chosen:  # only the chosen subcommand's module is imported
            module, _, variant = COMMANDS[name][0].partition(":")
            modules[name] = _Command(importlib.import_module(module), variant)
            modules[name].add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"
    level = logging.DEBUG if args.verbose else (
        logging.WARNING if os.environ.get("FEDML_HETEROFL_QUIET") else logging.INFO)
    if not logging.getLogger().handlers:  # the console shows `level`; a run's run.log at least INFO
        console = logging.StreamHandler()
        console.setLevel(level)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(console)
        logging.getLogger().setLevel(level)
        logging.getLogger("fedml_heterofl").setLevel(min(level, logging.INFO))
    try:
        return int(modules[args.command].main(args) or 0)
    except KeyboardInterrupt:
        print(f"fedml-heterofl {args.command}: interrupted (a standalone run resumes after its last completed "
              "round when started again)", file=sys.stderr)
        return 130
    except Exception as exc:  # not a problem the subcommand knows: one line unless --debug
        if debug():
            raise
        print(f"fedml-heterofl {args.command}: {type(exc).__name__}: {one_line(str(exc))} (an unexpected error; "
              f"--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
