"""``fedml-heterofl summary LABEL=FOLDER ...``: docs/results.md's summary table, one row per Table I
folder (:func:`summary_row`), read from the run files the report reads
(:func:`~fedml_heterofl.experiments.runs.load_runs`); ``--seeds LABEL=SEEDS`` reads one row's runs of
those seeds only (a folder whose later seeds are still running).
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path
from typing import AbstractSet, Dict, List, Mapping, Optional, Sequence, Tuple

from fedml_heterofl.messages import report_error
from fedml_heterofl.experiments.cells import md_table, mean_of, number_text, span_text
from fedml_heterofl.experiments.runs import Run, config_get, finished_runs, parse_seeds, swept

#: the summary table's columns
SUMMARY_HEADER = ("workload", "clients / attackers", "samples per client", "rounds", "seeds", "FedAvg clean",
                  "HeteroFL clean", "HeteroFL worst under attack", "worst attack")


def summary_row(label: str, runs: List[Run]) -> List[str]:
    """One row of :data:`SUMMARY_HEADER` for a Table I folder's ``runs``: the number of clients and of
    attackers (``byzantine_client_num``, also the rules' f without attack), the clients' mean number of
    training samples (with the ``max_samples_per_client`` cap where one is set), the rounds and the
    number of seeds; FedAvg's final accuracy without attack; HeteroFL's (all four steps) final accuracy
    over the task's classes without attack, and its lowest under an attack with that attack (means
    over seeds; ``–`` where the runs are missing). A folder whose runs sweep a value is refused (its
    cells would mix settings)."""
    sweeps = swept(runs)
    if sweeps:
        raise ValueError(f"{label}: the summary reads Table I folders; these runs sweep {', '.join(sweeps)}")
    fedavg = [r.final_acc for r in runs if r.defense == "fedavg" and r.attack == "none"]
    heterofl: Dict[str, List[float]] = defaultdict(list)
    for run in runs:
        if run.defense == "heterofl":
            heterofl[run.column].append(run.final_acc_task)
    attacked = {column: mean_of(accs) for column, accs in heterofl.items() if column != "none"}
    worst = min(attacked, key=attacked.__getitem__) if attacked else None
    samples = mean_of(r.samples for r in runs if r.samples is not None)
    caps = {config_get(r.config, "data_args.max_samples_per_client") for r in runs}
    cap = f"; cap {caps.pop()}" if len(caps) == 1 and None not in caps else ""
    clients = span_text(config_get(r.config, "train_args.client_num_in_total") for r in runs)
    attackers = span_text(config_get(r.config, "attack_args.byzantine_client_num") for r in runs)
    return [label, f"{clients} / {attackers}", "–" if math.isnan(samples) else f"{samples:.0f} (mean{cap})",
            span_text(r.summary.get("rounds") for r in runs), str(len({r.summary.get("seed") for r in runs})),
            number_text(mean_of(fedavg), ".4f"), number_text(mean_of(heterofl.get("none", [])), ".4f"),
            number_text(attacked[worst], ".4f") if worst else "–", worst or "–"]


def summary_table(folders: Sequence[Tuple[str, Path]], seeds: Optional[Mapping[str, AbstractSet[int]]] = None) -> str:
    """The Markdown summary table of docs/results.md: one :func:`summary_row` per ``(label, folder)``, of
    the runs of ``seeds[label]`` where the label has an entry; ValueError for an entry of no row."""
    seeds = dict(seeds or {})
    unknown = sorted(set(seeds) - {label for label, _ in folders})
    if unknown:
        raise ValueError(f"--seeds {unknown[0]!r}: no row has that label; the rows are "
                         f"{', '.join(repr(label) for label, _ in folders)}")
    body = []
    for label, folder in folders:
        body.append(summary_row(label, finished_runs(Path(folder), seeds.get(label))))
    return "\n".join(md_table(SUMMARY_HEADER, body)) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments: one ``LABEL=FOLDER`` per row, and ``--seeds LABEL=SEEDS``."""
    parser.add_argument("rows", nargs="+", metavar="LABEL=FOLDER",
                        help="a row's workload label and its Table I folder (e.g. 'MNIST/LR=runs/table1_mnist_lr')")
    parser.add_argument("--seeds", action="append", default=[], metavar="LABEL=SEEDS",
                        help="read only these seeds for the row LABEL (e.g. 'MNIST/LR=0-2'; repeatable); "
                             "default: every run of each folder")


def parse_labelled(items: Sequence[str], what: str = "FOLDER") -> List[Tuple[str, str]]:
    """``["LABEL=VALUE", ...]`` -> ``[(label, value), ...]``, split at the last ``=``; ValueError naming an
    item without a label or a value (``what`` names the value: FOLDER for a row, SEEDS for ``--seeds``)."""
    example = {"FOLDER": "'MNIST/LR=runs/table1_mnist_lr'", "SEEDS": "'MNIST/LR=0-2'"}[what]
    out = []
    for item in items:
        label, sep, value = item.rpartition("=")
        if not sep or not label or not value:
            raise ValueError(f"{item!r}: expected LABEL={what}, e.g. {example}")
        out.append((label, value))
    return out


def main(args: argparse.Namespace) -> int:
    """``fedml-heterofl summary LABEL=FOLDER ...``: print the summary table of docs/results.md."""
    try:
        seeds = {label: set(parse_seeds(text)) for label, text in parse_labelled(args.seeds, "SEEDS")}
        rows = [(label, Path(folder)) for label, folder in parse_labelled(args.rows)]
        print(summary_table(rows, seeds), end="")
    except ValueError as exc:
        return report_error("summary", exc)
    return 0
