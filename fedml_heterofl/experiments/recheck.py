"""``fedml-heterofl recheck RUN [RUN ...] --rounds K``: run an archived run's first rounds again from its
``config.yaml`` and compare them with its ``metrics.csv``.

A published number is only as good as the code that makes it today: after a change that should change
no number (a restructuring, an upgrade), rechecking a sample of the committed runs under ``runs/`` says
whether it did. Each run's settings are read from its ``config.yaml`` with ``train_args.comm_round = K``
(so the rerun stops after K rounds; nothing else about a round depends on the number of rounds except
that the last one is always tested), run by the standalone backend in a scratch folder that is deleted
afterwards, and every column of the committed rows 0..K-1 is compared with the rerun's: timing columns
(``time_*``) aside, and a test column only in the rounds where the committed run tested. Equal means
equal as written (the same text in the CSV), not close.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence

from fedml_heterofl.messages import report_error
from fedml_heterofl.record.store import StoreError
from fedml_heterofl.settings import SettingsError, load_settings
from fedml_heterofl.simulation.runner import Simulation


@dataclass
class Recheck:
    """One run's recheck: the rounds and cells compared, and the cells that differ
    (``(round, column, committed, rerun)``)."""

    run: Path
    rounds: int
    compared: int
    differences: List[tuple]

    @property
    def equal(self) -> bool:
        return self.compared > 0 and not self.differences


def compare_rows(run: Path, committed: Sequence[Dict[str, str]], rerun: Sequence[Dict[str, str]]) -> Recheck:
    """Compare ``run``'s ``committed`` rows with its ``rerun`` rows round by round (module doc)."""
    differences, compared = [], 0
    for old, new in zip(committed, rerun):
        for column, value in old.items():
            if column.startswith("time_") or value == "":
                continue
            compared += 1
            if new.get(column, "") != value:
                differences.append((int(old["round"]), column, value, new.get(column, "")))
    return Recheck(run, min(len(committed), len(rerun)), compared, differences)


def recheck_run(run: Path, rounds: int) -> Recheck:
    """Rerun the first ``rounds`` rounds of the archived run in ``run`` (module doc)."""
    committed = _read_rows(run / "metrics.csv")[:rounds]
    if len(committed) < rounds:
        raise StoreError(f"{run}: metrics.csv holds {len(committed)} rounds, fewer than --rounds {rounds}")
    settings = load_settings(run / "config.yaml")
    settings = replace(settings, train_args=replace(settings.train_args, comm_round=rounds),
                       common_args=replace(settings.common_args, run_name="recheck"))
    with tempfile.TemporaryDirectory(prefix="fedml_heterofl-recheck-") as scratch:
        Simulation(settings, results_dir=scratch).run(progress=False)
        rerun = _read_rows(Path(scratch) / "recheck" / "metrics.csv")
    return compare_rows(run, committed, rerun)


def _read_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        raise StoreError(f"{path}: no such file; a run folder holds metrics.csv")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="archived run folders (config.yaml + metrics.csv)")
    parser.add_argument("--rounds", type=int, default=2, help="how many first rounds to rerun (default 2)")


def main(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        return report_error("recheck", f"--rounds must be >= 1, got {args.rounds}")
    failed = 0
    for folder in args.runs:
        run = Path(folder)
        try:
            result = recheck_run(run, args.rounds)
        except (SettingsError, StoreError, ValueError) as exc:
            return report_error("recheck", exc)
        failed += not result.equal
        verdict = "equal" if result.equal else f"DIFFERENT in {len(result.differences)} cells"
        print(f"{run}: rounds 0-{result.rounds - 1}, {result.compared} cells compared: {verdict}")
        for t, column, old, new in result.differences[:5]:
            print(f"  round {t} {column}: committed {old}, rerun {new}")
    return 1 if failed else 0
