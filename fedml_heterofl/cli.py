"""The ``fedml-heterofl`` command: ``run | grid | report | archive | data`` (benchmarks: ``benchmarks/*.py``).

Each subcommand lives in the module that owns its work and exposes ``add_arguments(parser)`` and
``main(args) -> int``; this file only dispatches, importing the module lazily (``import fedml``
alone takes seconds, and ``data`` or ``report`` never need it).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

#: subcommand -> (module, one-line help)
COMMANDS = {
    "run": ("fedml_heterofl.simulation.cli", "run one experiment from a FedML YAML (--cf)"),
    "grid": ("fedml_heterofl.experiments.grid", "run a grid of experiments, resumable"),
    "report": ("fedml_heterofl.experiments.report", "tables and plots from result folders"),
    "archive": ("fedml_heterofl.experiments.archive", "copy finished runs' small files to a tracked folder"),
    "data": ("fedml_heterofl.data.cli", "fetch and inspect datasets"),
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # FedML's convention `python -m fedml_heterofl --cf config.yaml` means `run --cf config.yaml`.
    if argv and argv[0] in ("--cf", "--yaml_config_file"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(prog="fedml-heterofl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # options before it are global
    modules = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:  # only the chosen subcommand's module is imported
            modules[name] = importlib.import_module(COMMANDS[name][0])
            modules[name].add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else (
        logging.WARNING if os.environ.get("FEDML_HETEROFL_QUIET") else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
