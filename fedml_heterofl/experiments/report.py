"""``fedml-heterofl report RESULTS_DIR``: tables and plots from result folders.

Reads every run folder under ``RESULTS_DIR`` (``summary.json``, ``metrics.csv``) and writes, into
``RESULTS_DIR/report/``:

* ``table_accuracy.md`` / ``.csv`` — Table I style: rows defense, columns attack, final test accuracy
  as mean ± std over seeds (and the best accuracy), with the number of seeds;
* ``table_removal.md`` / ``.csv`` — mean removal success rate (ARSR, Table III) and FPR per
  defense × attack, and the mean number of attackers each HeteroFL step removed per round;
* ``accuracy_<attack>.png`` — accuracy per round of each defense under each attack (mean over seeds).

The Markdown accuracy table is also printed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from fedml_heterofl.experiments.store import atomic_write

#: column order of attacks (Table I) and row order of defenses
ATTACK_ORDER = ("none", "adaptive", "min_max", "min_sum", "label_flip", "sign_flip")
DEFENSE_ORDER = ("fedavg", "multikrum", "median", "zeno", "fltrust", "dnc", "heterofl")


def load_runs(results: Path) -> List[Dict[str, Any]]:
    """Every run folder's summary plus its per-round metrics (``rows``), finished runs only."""
    runs = []
    for summary_path in sorted(results.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if not summary.get("finished"):
            continue
        with open(summary_path.parent / "metrics.csv", newline="") as fh:
            summary["rows"] = list(csv.DictReader(fh))
        summary["name"] = summary_path.parent.name
        runs.append(summary)
    return runs


def _order(values: Sequence[str], preferred: Sequence[str]) -> List[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def group(runs: List[Dict[str, Any]]) -> Dict[Tuple[str, str, str], List[Dict[str, Any]]]:
    """Runs by ``(workload, defense label, attack)``; the defense label carries HeteroFL's steps
    when they are not all four (Table III ablations)."""
    out: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = defaultdict(list)
    for run in runs:
        out[(f"{run['dataset']}/{run['model']}", run.get("defense_label", run["defense"]), run["attack"])].append(run)
    return out


def tables(runs: List[Dict[str, Any]]) -> Dict[str, Tuple[str, str]]:
    """``{name: (markdown, csv)}`` of the accuracy and removal tables."""
    groups = group(runs)
    workloads = sorted({k[0] for k in groups})
    defenses = _order({k[1] for k in groups}, DEFENSE_ORDER)
    attacks = _order({k[2] for k in groups}, ATTACK_ORDER)
    acc_md, rem_md = [], []
    acc_csv, rem_csv = io.StringIO(), io.StringIO()
    acc_w, rem_w = csv.writer(acc_csv), csv.writer(rem_csv)
    acc_w.writerow(["workload", "defense", "attack", "seeds", "final_acc_mean", "final_acc_std", "best_acc_mean"])
    rem_w.writerow(["workload", "defense", "attack", "seeds", "arsr_mean", "fpr_mean"])
    for wl in workloads:
        acc_md += [f"\n**{wl}** — final test accuracy (mean ± std over seeds)\n",
                   "| defense | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        rem_md += [f"\n**{wl}** — removal success rate / FPR (mean over rounds and seeds)\n",
                   "| defense | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
        for d in defenses:
            acc_cells, rem_cells = [], []
            for a in attacks:
                rs = groups.get((wl, d, a), [])
                m, s = _mean_std([_float(r["final_acc"]) for r in rs])
                best, _ = _mean_std([_float(r["best_acc"]) for r in rs])
                arsr, _ = _mean_std([_float(r["mean_removal_success_rate"]) for r in rs])
                fpr, _ = _mean_std([_float(r["mean_fpr"]) for r in rs])
                acc_cells.append(_fmt(m, s, len(rs)))
                rem_cells.append("–" if not rs else f"{arsr:.2f} / {fpr:.2f}" if not math.isnan(arsr)
                                 else f"– / {fpr:.2f}")
                if rs:
                    acc_w.writerow([wl, d, a, len(rs), m, s, best])
                    rem_w.writerow([wl, d, a, len(rs), arsr, fpr])
            acc_md.append(f"| {d} | " + " | ".join(acc_cells) + " |")
            rem_md.append(f"| {d} | " + " | ".join(rem_cells) + " |")
    return {"table_accuracy": ("\n".join(acc_md) + "\n", acc_csv.getvalue()),
            "table_removal": ("\n".join(rem_md) + "\n", rem_csv.getvalue())}


def accuracy_curves(runs: List[Dict[str, Any]]) -> Dict[Tuple[str, str, str], Tuple[List[int], List[float]]]:
    """Mean test accuracy per evaluated round, per (workload, defense, attack)."""
    curves = {}
    for key, rs in group(runs).items():
        per_round: Dict[int, List[float]] = defaultdict(list)
        for r in rs:
            for row in r["rows"]:
                acc = _float(row.get("test_acc"))
                if not math.isnan(acc):
                    per_round[int(row["round"])].append(acc)
        rounds = sorted(per_round)
        curves[key] = (rounds, [statistics.fmean(per_round[t]) for t in rounds])
    return curves


def plot(runs: List[Dict[str, Any]], out: Path) -> List[Path]:
    """One PNG per (workload, attack): accuracy per round of every defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = accuracy_curves(runs)
    paths = []
    for wl, attack in sorted({(k[0], k[2]) for k in curves}):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for (w, d, a), (rounds, accs) in sorted(curves.items()):
            if (w, a) == (wl, attack):
                ax.plot([t + 1 for t in rounds], accs, marker="o", ms=3, label=d)
        ax.set(xlabel="round", ylabel="test accuracy", title=f"{wl} under {attack}", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"accuracy_{wl.replace('/', '_')}_{attack}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: Path) -> Tuple[Path, str]:
    """Write the report folder; returns it and the Markdown accuracy table."""
    runs = load_runs(results)
    if not runs:
        raise ValueError(f"no finished runs under {results} (a run folder holds summary.json with finished: true)")
    out = results / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, (md, table_csv) in tables(runs).items():
        atomic_write(out / f"{name}.md", md)
        atomic_write(out / f"{name}.csv", table_csv)
    plot(runs, out)
    return out, tables(runs)["table_accuracy"][0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="folder holding run folders (e.g. results/demo)")


def main(args: argparse.Namespace) -> int:
    try:
        out, table = write_report(Path(args.results))
    except ValueError as exc:
        print(f"fedml-heterofl report: {exc}", file=sys.stderr)
        return 2
    print(table)
    print(f"report written to {out}")
    return 0
