"""``fedml-heterofl archive RESULTS_DIR [DEST]``: the small files of finished runs, kept under version
control so that every published table can be regenerated from them alone (a grid that
runs for hours spans working days and machines, and work trees are laid anew between them).

A finished run folder (``summary.json`` with ``finished: true``) is copied as its
:data:`ARCHIVED_FILES` — the resolved config, the per-round metrics, the summary and the partition
statistics, a few kilobytes per run — to ``DEST/<run name>/`` (default ``runs/<name of RESULTS_DIR>``);
checkpoints and logs stay behind. ``fedml-heterofl report DEST`` reads an archive like a results
folder. A grid file's ``archive_dir`` archives each cell as soon as it finishes, and a cell already
archived with the same settings (:func:`archived_identities`) is not run again — on a fresh clone too.
Nor is a cell whose settings another grid's archive beside it already holds (e.g. the
trigger-share sweep's 200-samples cells are Table I's): that run is copied in under the cell's name.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Union

from fedml_heterofl.messages import report_error
from fedml_heterofl.record.store import RunStore, StoreError
from fedml_heterofl.settings import SettingsError, settings_from_dict
from fedml_heterofl.yaml_input import YamlInputError, read_yaml

log = logging.getLogger(__name__)

#: what a run's archive holds (everything the report reads, nothing large)
ARCHIVED_FILES = ("config.yaml", "metrics.csv", "summary.json", "partition.json")


def archive_run(run: Union[str, Path], dest_root: Union[str, Path]) -> Optional[Path]:
    """Copy a finished run's :data:`ARCHIVED_FILES` to ``dest_root/<run name>/``; ``None`` (nothing
    copied) when the run has not finished."""
    run = Path(run)
    if not RunStore(run.parent, run.name).finished:
        return None
    return copy_run(run, Path(dest_root) / run.name)


def copy_run(run: Union[str, Path], dest: Union[str, Path]) -> Path:
    """Copy the :data:`ARCHIVED_FILES` a run folder has to the folder ``dest`` (made if missing).
    Raises :class:`~fedml_heterofl.record.store.StoreError` naming ``dest`` when it exists and is not
    a run folder (a user's files are never overwritten)."""
    run, dest = Path(run), Path(dest)
    RunStore(dest.parent, dest.name).check_ours()
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED_FILES:
        if (run / name).exists():
            shutil.copy2(run / name, dest / name)
    return dest


def run_identity(run: Path) -> Optional[str]:
    """The settings identity of the finished run in the folder ``run`` (None: unfinished or unreadable)."""
    if not RunStore(run.parent, run.name).finished:
        return None
    try:
        return settings_from_dict(read_yaml(run / "config.yaml") or {}).identity
    except (YamlInputError, SettingsError) as exc:
        log.warning("archived run %s cannot be read (%s); it runs again", run, exc)
        return None


def archived_identities(root: Union[str, Path]) -> Dict[Path, str]:
    """Archived run folder -> its settings identity, for every finished run in every archive directly
    under ``root`` (``root/<grid>/<run>/``, e.g. ``runs/``). A run of other settings under a cell's name
    — e.g. after the grid's overrides changed — does not count for that cell; an archived config this
    version cannot read is left out, with a warning."""
    out: Dict[Path, str] = {}
    for config in sorted(Path(root).glob("*/*/config.yaml")):
        identity = run_identity(config.parent)
        if identity is not None:
            out[config.parent] = identity
    return out


def archive_results(results: Union[str, Path], dest_root: Union[str, Path]) -> List[Path]:
    """:func:`archive_run` for every run folder directly under ``results``; the archived folders."""
    out = []
    for folder in sorted(p for p in Path(results).iterdir() if (p / "summary.json").exists()):
        archived = archive_run(folder, dest_root)
        if archived is not None:
            out.append(archived)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a results folder (a grid's results_dir)")
    parser.add_argument("dest", nargs="?", help="archive folder (default: runs/<name of RESULTS>)")


def main(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not results.is_dir():
        print(f"fedml-heterofl archive: {results} is not a folder of runs", file=sys.stderr)
        return 2
    dest = Path(args.dest) if args.dest else Path("runs") / results.resolve().name
    try:
        done = archive_results(results, dest)
    except (StoreError, OSError) as exc:
        return report_error("archive", exc)
    print(f"archived {len(done)} finished runs to {dest}")
    return 0
