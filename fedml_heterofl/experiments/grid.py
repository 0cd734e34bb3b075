"""``fedml-heterofl grid --cf config/grids/NAME.yaml``: a grid of standalone runs as independent,
resumable result folders.

A grid file names a base config, overrides for every cell, and axes whose cartesian product makes
the cells::

    base: ../mnist_lr.yaml             # relative to the grid file
    results_dir: results/demo          # relative to the working directory
    overrides: {train_args.comm_round: 30}
    axes:
      defense:                         # label -> overrides ("section.key": value)
        fedavg: {defense_args.enable_defense: false}
        heterofl: {defense_args.enable_defense: true, defense_args.defense_type: heterofl}
      attack:
        none: {attack_args.enable_attack: false}
        min_max: {attack_args.enable_attack: true, attack_args.attack_type: min_max}
      seed: [0, 1, 2]                  # a list: values of common_args.random_seed

Every cell is validated before the first one runs (a bad cell stops the grid at start-up with the
cell's name and the offending key). A cell's folder is named by its labels
(``defense=heterofl,attack=min_max,seed=0``); finished cells are skipped and an interrupted cell
resumes from its checkpoint, so the grid is safe to kill and restart.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import yaml
from tqdm.auto import tqdm

from fedml_heterofl.settings import Settings, SettingsError, settings_from_dict

log = logging.getLogger(__name__)

#: the axis whose list values set the seed
SEED_AXIS = "seed"


def _set(config: Dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if not key:
        raise SettingsError(f"grid override {dotted!r}: expected 'section.key'")
    body = config.setdefault(section, {})
    if not isinstance(body, dict):
        raise SettingsError(f"grid override {dotted!r}: section {section!r} is not a mapping")
    body[key] = value


def _axis(name: str, values: Any) -> List[Tuple[str, Mapping[str, Any]]]:
    if isinstance(values, list):
        if name != SEED_AXIS:
            raise SettingsError(f"grid axis {name!r}: a list is only allowed for the {SEED_AXIS!r} axis; "
                                "give a mapping of label -> overrides")
        return [(str(v), {"common_args.random_seed": v}) for v in values]
    if not isinstance(values, Mapping) or not values:
        raise SettingsError(f"grid axis {name!r}: expected a non-empty mapping of label -> overrides")
    return [(str(label), dict(over or {})) for label, over in values.items()]


def load_grid(path: str) -> Tuple[Path, List[Tuple[str, Settings]]]:
    """``(results_dir, [(cell name, settings), ...])`` of a grid file; every cell validated."""
    with open(path) as fh:
        grid = yaml.safe_load(fh) or {}
    unknown = sorted(set(grid) - {"base", "results_dir", "overrides", "axes"})
    if unknown:
        raise SettingsError(f"grid {path}: unknown key {unknown[0]!r}; allowed: base, results_dir, overrides, axes")
    if "base" not in grid:
        raise SettingsError(f"grid {path}: 'base' (the base config file) is required")
    with open(Path(path).parent / grid["base"]) as fh:
        base = yaml.safe_load(fh) or {}
    for dotted, value in (grid.get("overrides") or {}).items():
        _set(base, dotted, value)
    axes = [(name, _axis(name, values)) for name, values in (grid.get("axes") or {}).items()]
    cells = []
    for combo in itertools.product(*[values for _, values in axes]):
        name = ",".join(f"{axis}={label}" for (axis, _), (label, _) in zip(axes, combo)) or "base"
        config = copy.deepcopy(base)
        for _, overrides in combo:
            for dotted, value in overrides.items():
                _set(config, dotted, value)
        _set(config, "common_args.run_name", name)
        try:
            cells.append((name, settings_from_dict(config)))
        except SettingsError as exc:
            raise SettingsError(f"grid cell {name}: {exc}") from None
    results = Path(grid.get("results_dir") or Path("results") / Path(path).stem)
    return results, cells


def run_grid(path: str, *, progress: bool = True) -> Path:
    """Run every unfinished cell of the grid file ``path``; returns the results folder."""
    from fedml_heterofl.experiments.store import RunStore
    from fedml_heterofl.simulation.runner import Simulation

    results, cells = load_grid(path)
    todo = [(name, s) for name, s in cells if not RunStore(results, name).finished]
    log.info("grid %s: %d cells, %d to run, results in %s", path, len(cells), len(todo), results)
    quiet = not progress or bool(os.environ.get("FEDML_HETEROFL_QUIET"))
    for name, settings in tqdm(todo, desc="grid cells", disable=quiet):
        summary = Simulation(settings, results_dir=str(results)).run(progress=not quiet)
        log.info("%s: final accuracy %.4f", name, summary["final_acc"])
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cf", required=True, help="grid file (config/grids/NAME.yaml)")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from fedml_heterofl.data import DataError

    try:
        results = run_grid(args.cf, progress=not args.no_progress)
    except (SettingsError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"fedml-heterofl grid: {exc}", file=sys.stderr)
        return 2
    print(f"results in {results}; tables: fedml-heterofl report {results}")
    return 0
