"""``fedml-heterofl grid --cf config/grids/NAME.yaml``: a grid of standalone runs as independent,
resumable result folders.

A grid file names a base config, overrides for every cell, and axes whose cartesian product makes
the cells::

    base: ../mnist_lr.yaml             # relative to the grid file
    results_dir: results/demo          # relative to the working directory
    archive_dir: runs/demo             # optional: each finished cell's small files are copied here
    overrides: {train_args.comm_round: 30}
    axes:
      defense:                         # label -> overrides ("section.key": value)
        fedavg: {defense_args.enable_defense: false}
        heterofl: {defense_args.enable_defense: true, defense_args.defense_type: heterofl}
      attack:
        none: {attack_args.enable_attack: false}
        min_max: {attack_args.enable_attack: true, attack_args.attack_type: min_max}
      seed: [0, 1, 2]                  # a list: values of common_args.random_seed

A key with more dots reaches into a mapping (``attack_args.attack_params.gamma_init: 0.01``), so two
axes can each set one parameter of the same attack or defense.

Every cell is validated before the first one runs (a bad cell stops the grid at start-up with the
cell's name and the offending key). A cell's folder is named by its labels
(``defense=heterofl,attack=min_max,seed=0``); finished cells are skipped and an interrupted cell
resumes from its checkpoint, so the grid is safe to kill and restart. A cell that fails while running
does not stop the others: its error is logged, the remaining cells run, and the grid then fails
with every failed cell's name and error (:class:`GridError`). A cell that fails outside its run — at an
import (a broken install), or while its finished run is archived — stops the grid at once
(:class:`CellAbort`, one line, exit 1). With ``archive_dir``, each cell's
config, metrics and summary are copied there as soon as it finishes
(:func:`~fedml_heterofl.experiments.archive.archive_run`), ready to be committed; a cell whose settings
are already archived there, or in another grid's archive beside it, is copied, not run. ``--jobs N``
runs N cells at a time in separate processes (the numbers do not depend on it); ``--set
section.key=VALUE`` overrides a key in every cell (e.g. ``device_args.using_gpu=true``; not
``common_args.run_name`` or ``results_dir``, which the grid sets). The grid file is checked key by key
and read like a config (:mod:`fedml_heterofl.yaml_input`); a failed cell is one line in the log and in
the grid's error, its traceback in the cell's ``run.log`` (``--debug``: in the log too).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from tqdm.auto import tqdm

from fedml_heterofl.messages import debug, describe
from fedml_heterofl.environment import failed_at_import, raised_where
from fedml_heterofl.settings import Settings, SettingsError, settings_from_dict
from fedml_heterofl.yaml_input import YamlInputError, parse_yaml, read_yaml

log = logging.getLogger(__name__)


class GridError(RuntimeError):
    """Some cells of a grid failed while running (the message names each with its error)."""


class CellAbort(RuntimeError):
    """A cell failed outside its own run — a module failed to import (a broken install): the grid stops
    at once rather than run later cells on half-imported modules (a failed import leaves the modules it
    imported before the error in ``sys.modules``)."""


#: the axis whose list values set the seed
SEED_AXIS = "seed"
#: the keys of a grid file
GRID_KEYS = ("base", "results_dir", "archive_dir", "overrides", "axes")


def _set(config: Dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[section][key]`` for ``section.key``; deeper dots reach into mappings
    (``attack_args.attack_params.gamma_init``), created where missing."""
    section, *keys = dotted.split(".")
    if not keys or not all(keys):
        raise SettingsError(f"grid override {dotted!r}: expected 'section.key'")
    body = config
    for name in [section, *keys[:-1]]:
        body = body.setdefault(name, {})
        if not isinstance(body, dict):
            raise SettingsError(f"grid override {dotted!r}: {name!r} is not a mapping")
    body[keys[-1]] = value


#: keys a grid sets itself for every cell (the folder ``results_dir/<cell name>``): refused as overrides
GRID_OWNED = ("common_args.run_name", "common_args.results_dir")


def _overrides(where: str, over: Any) -> Dict[str, Any]:
    """``over`` checked as a mapping of ``section.key`` -> value (``where`` names it in an error)."""
    if over is None:
        return {}
    if not isinstance(over, Mapping):
        raise SettingsError(f"{where}: expected a mapping of section.key -> value, got {type(over).__name__}")
    for dotted in over:
        if not isinstance(dotted, str) or "." not in dotted:
            raise SettingsError(f"{where}: key {dotted!r}: expected 'section.key'")
        if dotted in GRID_OWNED:
            raise SettingsError(f"{where}: {dotted} cannot be overridden: a grid runs each cell in results_dir/<cell "
                                "name> (set results_dir in the grid file)")
    return dict(over)


def _axis(name: Any, values: Any) -> List[Tuple[str, Mapping[str, Any]]]:
    if isinstance(values, list):
        if name != SEED_AXIS:
            raise SettingsError(f"grid axis {name!r}: a list is only allowed for the {SEED_AXIS!r} axis; "
                                "give a mapping of label -> overrides")
        if not values:
            raise SettingsError(f"grid axis {SEED_AXIS!r}: expected a non-empty list of seeds")
        return [(str(v), {"common_args.random_seed": v}) for v in values]
    if not isinstance(values, Mapping) or not values:
        raise SettingsError(f"grid axis {name!r}: expected a non-empty mapping of label -> overrides")
    return [(str(label), _overrides(f"grid axis {name!r}, label {label!r}", over)) for label, over in values.items()]


def parse_set(items: List[str]) -> Dict[str, Any]:
    """``["section.key=VALUE", ...]`` (VALUE read as YAML) -> ``{"section.key": value}``."""
    out = {}
    for item in items:
        dotted, sep, value = item.partition("=")
        if not sep or "." not in dotted:
            raise SettingsError(f"--set {item!r}: expected section.key=VALUE, e.g. device_args.using_gpu=true")
        try:
            out[dotted] = parse_yaml(value, f"--set {dotted}")
        except YamlInputError as exc:
            raise SettingsError(str(exc)) from None
    return _overrides("--set", out)


def _read(path: Path, what: str) -> Dict[str, Any]:
    """The YAML mapping in ``path`` (empty: ``{}``); :class:`SettingsError` otherwise."""
    try:
        body = read_yaml(path, what)
    except YamlInputError as exc:
        raise SettingsError(str(exc)) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        keys = ", ".join(GRID_KEYS) if what == "grid" else "FedML sections"
        raise SettingsError(f"{path}: a {what} file is a mapping (keys: {keys}), got {type(body).__name__}")
    return body


def read_grid(path: str) -> Dict[str, Any]:
    """The grid file ``path`` checked key by key (module doc); :class:`SettingsError` names the key."""
    grid = _read(Path(path), "grid")
    unknown = sorted(set(map(str, grid)) - set(GRID_KEYS))
    if unknown:
        raise SettingsError(f"grid {path}: unknown key {unknown[0]!r}; allowed: {', '.join(GRID_KEYS)}")
    if grid.get("base") is None:
        raise SettingsError(f"grid {path}: 'base' (the base config file) is required")
    for key in ("base", "results_dir", "archive_dir"):
        value = grid.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise SettingsError(f"grid {path}: {key}: expected a path (text), got {value!r}")
    if not isinstance(grid.get("axes") or {}, Mapping):
        raise SettingsError(f"grid {path}: axes: expected a mapping of axis name -> labels (or a list of seeds for "
                            f"{SEED_AXIS!r}), got {type(grid['axes']).__name__}")
    _overrides(f"grid {path}: overrides", grid.get("overrides"))
    return grid


def load_grid(path: str, extra: Optional[Mapping[str, Any]] = None) -> Tuple[Path, List[Tuple[str, Settings]]]:
    """``(results_dir, [(cell name, settings), ...])`` of a grid file; every cell validated.
    ``extra`` overrides (``{"section.key": value}``) apply to every cell after the grid's own."""
    grid = read_grid(path)
    extra = _overrides("--set", extra)
    base = _read(Path(path).parent / grid["base"], "configuration")
    for dotted, value in (grid.get("overrides") or {}).items():
        _set(base, dotted, value)
    axes = [(name, _axis(name, values)) for name, values in (grid.get("axes") or {}).items()]
    cells = []
    for combo in itertools.product(*[values for _, values in axes]):
        name = ",".join(f"{axis}={label}" for (axis, _), (label, _) in zip(axes, combo)) or "base"
        config = copy.deepcopy(base)
        try:
            for overrides in [*(o for _, o in combo), extra]:
                for dotted, value in overrides.items():
                    _set(config, dotted, value)
            _set(config, "common_args.run_name", name)
            cells.append((name, settings_from_dict(config)))
        except SettingsError as exc:
            raise SettingsError(f"grid cell {name}: {exc}") from None
    results = Path(grid.get("results_dir") or Path("results") / Path(path).stem)
    return results, cells


def archive_dir(path: str) -> Optional[Path]:
    """The grid file's ``archive_dir`` (None when it has none)."""
    value = read_grid(path).get("archive_dir")
    return Path(value) if value else None


def _run_cell(settings: Settings, results: Path, progress: bool, threads: Optional[int] = None) -> Dict[str, Any]:
    """One cell's run (in a worker process when ``threads`` is given: torch gets that many threads).
    Raises :class:`CellAbort` (one line) when the cell failed at an import."""
    try:
        from fedml_heterofl.simulation.runner import Simulation

        if threads is not None:  # a worker process: its share of the threads; run.log at INFO as in the CLI
            import torch

            torch.set_num_threads(threads)
            logging.getLogger("fedml_heterofl").setLevel(logging.INFO)
        return Simulation(settings, results_dir=str(results)).run(progress=progress)
    except Exception as exc:
        if failed_at_import(exc):
            where = raised_where(exc)
            log.debug("cell %s failed at an import", settings.common_args.run_name, exc_info=True)
            raise CellAbort(f"a module failed to import: {type(exc).__name__}: {' '.join(str(exc).split())}"
                            + (f" (raised in {where})" if where else "")) from None
        raise


def run_grid(path: str, *, progress: bool = True, jobs: int = 1, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Run every unfinished cell of the grid file ``path`` (finished: in the results folder, or in the
    grid's ``archive_dir`` with the same settings; a run of the same settings in another archive beside
    it is copied into both under the cell's name), ``jobs`` cells at a time (each in its own
    process with ``cpu_count // jobs`` torch threads when ``jobs > 1``); returns the results folder.
    Cells are independent and seeded by their own settings, so ``jobs`` does not change any number.
    Raises :class:`GridError` after the last cell when some cells failed."""
    from fedml_heterofl.record.store import RunStore

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    from fedml_heterofl.experiments.archive import archive_run, archived_identities, copy_run, run_identity

    results, cells = load_grid(path, extra)
    archive = archive_dir(path)
    if archive is not None:  # cells that finished before (e.g. before archive_dir was set), not yet archived
        for name, _ in cells:  # as they are: an archived run of the same settings is kept (it may be newer)
            if (results / name).is_dir() and run_identity(results / name) != run_identity(archive / name):
                archive_run(results / name, archive)
    todo = [(name, s) for name, s in cells if not RunStore(results, name).finished]
    if archive is not None and todo:  # archived with the same settings: here, or by another grid beside it
        identities = archived_identities(archive.parent)
        sources: Dict[str, Path] = {}
        for folder, identity in identities.items():
            sources.setdefault(identity, folder)
        for name, s in todo:
            if identities.get(archive / name) != s.identity and s.identity in sources:
                copy_run(sources[s.identity], archive / name)
                copy_run(sources[s.identity], results / name)
                log.info("%s: the same settings finished as %s; copied, not run again", name, sources[s.identity])
        todo = [cell for cell in todo if cell[1].identity not in sources]
    log.info("grid %s: %d cells, %d to run, results in %s", path, len(cells), len(todo), results)
    quiet = not progress or bool(os.environ.get("FEDML_HETEROFL_QUIET"))
    bar = tqdm(total=len(todo), desc="grid cells", disable=quiet)
    failed: List[str] = []
    finished: List[str] = []

    def done(name: str, run: Callable[[], Dict[str, Any]]) -> None:
        try:
            summary = run()
        except CellAbort as exc:  # not the cell's own failure: no later cell can be trusted
            raise CellAbort(f"cell {name} stopped the grid: {exc}; {len(todo) - len(finished) - 1} cells not run "
                            "(fix the install, e.g. bash run/setup.sh, and run the grid again)") from None
        except Exception as exc:  # one broken cell must not stop the independent others; its traceback is
            problem = describe(exc)  # in its run.log
            log.error("grid cell %s failed: %s", name, problem, exc_info=debug())
            failed.append(f"{name}: {problem}")
        else:  # an error here (archiving) is outside the run: it stops the grid
            log.info("%s: final accuracy %.4f", name, summary["final_acc"])
            if archive is not None:
                archive_run(results / name, archive)
        finished.append(name)
        bar.update()

    try:
        if jobs == 1:
            for name, settings in todo:
                done(name, lambda: _run_cell(settings, results, not quiet))
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_run_cell, s, results, False, threads): name for name, s in todo}
                try:
                    for future in as_completed(futures):
                        done(futures[future], future.result)
                except BaseException:  # cells not started are not started; running ones finish
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    if failed:
        raise GridError(f"{len(failed)} of {len(todo)} cells failed (the others finished; fix the cause and run "
                        f"the grid again to run only these): " + "; ".join(failed))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cf", required=True, help="grid file (config/grids/NAME.yaml)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at the same time, one process each")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override for every cell, e.g. device_args.using_gpu=true (repeatable)")


def main(args: argparse.Namespace) -> int:
    from fedml_heterofl.data import DataError

    from fedml_heterofl.messages import report_error
    from fedml_heterofl.record.store import StoreError

    try:
        results = run_grid(args.cf, progress=not args.no_progress, jobs=args.jobs, extra=parse_set(args.set))
    except (SettingsError, DataError, StoreError, ValueError, OSError) as exc:
        return report_error("grid", exc)
    except (GridError, CellAbort) as exc:
        print(f"fedml-heterofl grid: {exc}", file=sys.stderr)
        return 1
    print(f"results in {results}; tables: fedml-heterofl report {results}")
    return 0
