"""``fedml-heterofl report RESULTS_DIR``: tables and plots from result folders.

Reads every finished run folder under ``RESULTS_DIR`` (:func:`~fedml_heterofl.experiments.runs.load_runs`)
and writes, into ``RESULTS_DIR/report/``, every table of :mod:`~fedml_heterofl.experiments.tables` as
``<table>.md`` and ``<table>.csv``, every figure of :mod:`~fedml_heterofl.experiments.figures`, and
``README.md`` with every table and a link to every plot; the Markdown accuracy tables are also printed.
``--print TABLE`` prints one table and writes nothing (what docs/results.md quotes); ``--seeds 0,2`` reads
the runs of those seeds only (a grid's finished seeds while the others run). This module sits above the
tables and the figures, so neither imports the other.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import AbstractSet, List, Mapping, Optional, Sequence, Tuple

from fedml_heterofl.messages import report_error
from fedml_heterofl.experiments.figures import draw
from fedml_heterofl.experiments.runs import Run, finished_runs, parse_seeds, swept
from fedml_heterofl.experiments.tables import tables
from fedml_heterofl.experiments.timing import TARGET_SHARE
from fedml_heterofl.record.store import StoreError, atomic_write

SECTIONS = (
    ("table_accuracy", "Accuracy (Table I)"),
    ("table_drops", "Beside the paper: accuracy drops (Table I)"),
    ("table_removal", "Removal success rate and FPR"),
    ("table_ablation", "Ablation (Table III)"),
    ("table_steps", "Removals per HeteroFL step"),
    ("table_oracle", "Adaptive attack: oracle agreement"),
    ("table_time", "Time to accuracy (Table II)"),
)


def index_markdown(results: Path, runs: List[Run], made: Mapping[str, Tuple[str, str]], plots: List[Path],
                   seeds: Optional[AbstractSet[int]] = None) -> str:
    """``report/README.md``: every table (with its CSV) and a link to every plot."""
    sweeps = swept(runs)
    cells = len({(r.workload, r.row, r.column) for r in runs})
    lines = [f"# Report: {results}", "", f"{len(runs)} finished runs in {cells} cells (means over seeds)."
             + (f" Swept: {', '.join(sweeps)}." if sweeps else "")
             + (f" Seeds read: {', '.join(map(str, sorted(seeds)))} (--seeds)." if seeds is not None else "")]
    for name, title in SECTIONS:
        if name in made:
            lines += ["", f"## {title}", "", f"CSV: [{name}.csv]({name}.csv)", made[name][0].rstrip()]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(results: Path, *, target: Optional[float] = None,
                 seeds: Optional[AbstractSet[int]] = None) -> Tuple[Path, str]:
    """Write the report folder (module doc); returns it and the Markdown accuracy tables.

    Args:
        results: the folder holding the run folders.
        target: time-to-accuracy target for workloads without a FedAvg run without attack.
        seeds: read only the runs of these seeds (all where None).
    """
    results = Path(results)
    runs = finished_runs(results, seeds)
    out = results / "report"
    out.mkdir(parents=True, exist_ok=True)
    made = tables(runs, target)
    for name, (md, table_csv) in made.items():
        atomic_write(out / f"{name}.md", md)
        atomic_write(out / f"{name}.csv", table_csv)
    plots = draw(runs, out)
    atomic_write(out / "README.md", index_markdown(results, runs, made, plots, seeds))
    return out, made["table_accuracy"][0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments: the results folder, ``--target``, ``--seeds`` and ``--print``."""
    parser.add_argument("results", help="folder holding run folders (e.g. results/demo)")
    parser.add_argument("--target", type=float, default=None,
                        help=f"time-to-accuracy target for every workload (e.g. 0.8, as the paper's Table II); "
                             f"default: {TARGET_SHARE:.0%}% of the workload's FedAvg-without-attack final accuracy")
    parser.add_argument("--seeds", default=None, metavar="SEEDS",
                        help="read only the runs of these seeds (e.g. 0, 0,2 or 0-2); default: every run")
    parser.add_argument("--print", dest="print_tables", action="append", default=[], metavar="TABLE",
                        help="print this table's Markdown (e.g. table_accuracy, table_time; repeatable) and write "
                             "nothing: what docs/results.md quotes")


def print_tables(results: Path, names: Sequence[str], target: Optional[float] = None,
                 seeds: Optional[AbstractSet[int]] = None) -> None:
    """Print the Markdown of the tables ``names`` (:func:`tables`' keys) of the runs under ``results``
    (of ``seeds`` only, where given)."""
    runs = finished_runs(results, seeds)
    made = tables(runs, target)
    missing = [name for name in names if name not in made]
    if missing:
        raise ValueError(f"no {missing[0]} for the runs under {results}; these have: {', '.join(made)}")
    for name in names:
        print(made[name][0].rstrip() + "\n")


def main(args: argparse.Namespace) -> int:
    """``fedml-heterofl report``: write the report folder, or ``--print`` tables; 2 for a problem the user can fix."""
    if args.target is not None and not 0.0 < args.target <= 1.0:  # also NaN
        return report_error("report", f"--target: {args.target} is not an accuracy; allowed: above 0, at most 1")
    try:
        seeds = None if args.seeds is None else set(parse_seeds(args.seeds))
        if args.print_tables:
            print_tables(Path(args.results), args.print_tables, args.target, seeds)
            return 0
        out, table = write_report(Path(args.results), target=args.target, seeds=seeds)
    except (ValueError, StoreError) as exc:
        return report_error("report", exc)
    except OSError as exc:
        return report_error("report", f"cannot write the report into {exc.filename or args.results}: "
                                      f"{exc.strerror or exc}")
    print(table)
    print(f"report written to {out}")
    return 0


