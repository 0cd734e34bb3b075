"""The ``fedml-heterofl`` command: ``run | grid | report | data | bench``.

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
    "data": ("fedml_heterofl.data.cli", "fetch and inspect datasets"),
    "bench": ("fedml_heterofl.experiments.bench", "run the benchmarks"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # FedML's convention `python -m fedml_heterofl --cf config.yaml` means `run --cf config.yaml`.
    if argv and argv[0] in ("--cf", "--yaml_config_file"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(prog="fedml-heterofl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        mod = _load(name) if (argv and argv[0] == name) else None
        if mod is not None:
            mod.add_arguments(p)
            modules[name] = mod
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else (
        logging.WARNING if os.environ.get("FEDML_HETEROFL_QUIET") else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mod = modules.get(args.command)
    if mod is None:
        print(f"fedml-heterofl {args.command}: not yet available in this version", file=sys.stderr)
        return 2
    return int(mod.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
