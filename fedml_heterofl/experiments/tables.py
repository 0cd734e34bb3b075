"""The report's tables, each as ``(markdown, csv)``, from the runs :func:`~fedml_heterofl.experiments.runs.load_runs`
reads (means over seeds; the paper is Lu, Hu et al., IEEE TIFS 2024, "Depriving the Survival Space of
Adversaries Against Poisoned Gradients in FL"):

* ``table_accuracy`` — Table I style: rows defense, columns attack, final test accuracy as mean ± std
  over seeds, and the best accuracy of each run beside it; where HeteroFL runs, also the accuracy over
  the task's classes and the share of test images predicted as the watermark class;
* ``table_drops`` — beside the paper's Table I (:mod:`~fedml_heterofl.experiments.paper`), for workloads
  it has a row for: each rule's accuracy without attack and, under each attack, its accuracy minus that,
  in points, paper / ours;
* ``table_removal`` — mean removal success rate (ARSR) and FPR per defense × attack;
* ``table_ablation`` — Table III style, when HeteroFL runs with fewer than four steps exist: rows
  FedAvg, step 1, steps 1-2, 1-3, 1-4 and the other defenses, cells "ACC / ARSR";
* ``table_steps`` — for each HeteroFL variant × attack, the attackers and benign clients each step
  removed per round (mean over rounds and seeds) and the step's share of the f attackers;
* ``table_oracle`` — for adaptive-attack runs with full knowledge, per defense: the rounds whose oracle
  predicted the server's kept set exactly, out of all their rounds;
* ``table_calibration`` — when runs without attack differ in the learning rate (a calibration grid):
  test accuracy after every 10th round and the last one, per learning rate (mean ± std over seeds);
* ``table_time`` — Table II, time to accuracy (:mod:`~fedml_heterofl.experiments.timing`).

:func:`tables` gives every one that applies to a set of runs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from fedml_heterofl.defense.heterofl import STEP_NAMES
from fedml_heterofl.experiments.cells import (
    csv_text, finite_values, md_table, mean_and_std, mean_of, mean_text, number_text, to_float)
from fedml_heterofl.experiments.paper import PAPER_ROW, paper_accuracy
from fedml_heterofl.experiments.runs import (
    ALL_STEPS, Run, columns_of, group, rows_of, step_rates, steps_label, swept, workloads_of)
from fedml_heterofl.experiments.timing import time_table

#: the calibration table gives the accuracy after every this many rounds (and after the last)
CALIBRATION_EVERY = 10


# -- Table I: accuracy, removal ---------------------------------------------------------------------
def accuracy_table(runs: List[Run]) -> Tuple[str, str]:
    """Final and best test accuracy (mean ± std over seeds) per workload, defense and attack, and the
    final accuracy over the task's L classes (:attr:`Run.final_acc_task`) where HeteroFL runs."""
    groups = group(runs)
    md: List[str] = []
    body: List[List[Any]] = []
    columns = columns_of(runs)
    # (title, value per run); the task-class table only where HeteroFL (the watermark output) runs
    metrics = (("final test accuracy (mean ± std over seeds)", lambda r: r.final_acc),
               ("best test accuracy of each run (mean ± std over seeds)", lambda r: r.best_acc),
               ("final test accuracy over the task's classes, HeteroFL's watermark output ignored "
                "(mean ± std over seeds)", lambda r: r.final_acc_task),
               ("share of the test images the final model predicts as HeteroFL's watermark class "
                "(mean ± std over seeds)", lambda r: r.final_watermark_share))
    for wl in workloads_of(runs):
        wl_runs = [r for r in runs if r.workload == wl]
        tables: List[List[List[str]]] = [[] for _ in metrics]
        seeds = {len(rs) for (w, _, _), rs in groups.items() if w == wl}
        for d in rows_of(wl_runs):
            rows = [[d] for _ in metrics]
            for a in columns:
                rs = groups.get((wl, d, a), [])
                stats = [mean_and_std([value(r) for r in rs]) for _, value in metrics]
                short = f" (n={len(rs)})" if rs and len(rs) < max(seeds) else ""
                for row, (mean, std) in zip(rows, stats):
                    row.append(mean_text(mean, std, len(rs)) + (short if not math.isnan(mean) else ""))
                if rs:
                    body.append([wl, d, a, len(rs), *[x for pair in stats for x in pair]])
            for table, row in zip(tables, rows):
                table.append(row)
        shown = len(metrics) if any(r.steps for r in wl_runs) else len(metrics) - 2
        note = f"; (n=k): a cell of k seeds, where others have {max(seeds)}" if len(seeds) > 1 else ""
        for (title, _), table in list(zip(metrics, tables))[:shown]:
            md += [f"\n**{wl}** — {title}{note}\n"]
            md += md_table(["defense", *columns], table)
    header = ["workload", "defense", "attack", "seeds", "final_acc_mean", "final_acc_std", "best_acc_mean",
              "best_acc_std", "final_acc_task_mean", "final_acc_task_std", "watermark_share_mean",
              "watermark_share_std"]
    return "\n".join(md) + "\n", csv_text(header, body)


def _pair_table(runs: List[Run], *, ablation: bool, first: Callable[[Run], float], second: Callable[[Run], float],
                first_spec: str, title: str, csv_names: Tuple[str, str]) -> Tuple[str, str]:
    """Per workload, ``first / second`` (each the mean over seeds) for every row (defense, or Table III's
    setting when ``ablation``) and column (attack); Markdown and CSV."""
    groups = group(runs)
    md: List[str] = []
    body: List[List[Any]] = []
    columns = columns_of(runs)
    for wl in workloads_of(runs):
        wl_runs = [r for r in runs if r.workload == wl]
        md_rows = []
        for d in rows_of(wl_runs, ablation=ablation):
            cells = [ablation_name(d) if ablation else d]
            for a in columns:
                rs = groups.get((wl, d, a), [])
                x, y = mean_of(first(r) for r in rs), mean_of(second(r) for r in rs)
                cells.append(f"{number_text(x, first_spec)} / {number_text(y)}" if rs else "–")
                if rs:
                    body.append([wl, d, a, len(rs), x, y])
            md_rows.append(cells)
        md += [f"\n**{wl}** — {title}\n"]
        md += md_table(["setting" if ablation else "defense", *columns], md_rows)
    return "\n".join(md) + "\n", csv_text(["workload", "defense", "attack", "seeds", *csv_names], body)


def removal_table(runs: List[Run]) -> Tuple[str, str]:
    """ARSR / FPR (mean over rounds, then over seeds) per workload, defense and attack."""
    return _pair_table(runs, ablation=False, first=lambda r: r.arsr, second=lambda r: r.fpr, first_spec=".2f",
                       title="removal success rate / FPR (mean over rounds and seeds)",
                       csv_names=("arsr_mean", "fpr_mean"))


# -- Table I beside the paper -----------------------------------------------------------------------
def drops_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Per workload with a row in the paper's Table I (:func:`~fedml_heterofl.experiments.paper.paper_accuracy`)
    and per defense with runs without attack (HeteroFL with all four steps only): the accuracy without
    attack, paper / ours, and under each attack the accuracy minus the rule's own accuracy without
    attack, in points (means over seeds), paper / ours; ``–`` where a side has no number (FedAvg, ALIE
    and IPM are not in the paper's table). Our drop pairs seeds: it is taken from the runs without
    attack of the seeds the attack's cell has (all of them when they share none), so a column run at
    fewer seeds than the clean one is not measured against other seeds' accuracy. It is marked ``†``
    when it is inside the seed spread: both sides have two or more seeds and the drop is at most the
    larger of their standard deviations over seeds. None when no workload has both."""
    groups = group(runs)
    md: List[str] = []
    body: List[List[Any]] = []
    for wl in workloads_of(runs):
        paper = paper_accuracy(wl)
        if not paper:
            continue
        wl_runs = [r for r in runs if r.workload == wl and (not r.steps or r.steps == ALL_STEPS)]
        attacks = [a for a in columns_of(wl_runs) if a != "none"]
        md_rows = []
        for d in rows_of(wl_runs):
            clean_runs = groups.get((wl, d, "none"), [])
            clean = mean_and_std([r.final_acc for r in clean_runs])[0]
            if math.isnan(clean):
                continue
            theirs = paper.get(d, {})
            cells = [d, f"{number_text(theirs.get('none', math.nan), '.3f')} / {clean:.3f}"]
            for a in attacks:
                rs = groups.get((wl, d, a), [])
                acc, acc_std = mean_and_std([r.final_acc for r in rs])
                seeds = {r.seed for r in rs}
                base = [r for r in clean_runs if r.seed in seeds] or clean_runs
                base_acc, base_std = mean_and_std([r.final_acc for r in base])
                drop = 100 * (theirs[a] - theirs["none"]) if a in theirs else math.nan
                spread = min(len(rs), len(base)) > 1 and abs(acc - base_acc) <= max(base_std, acc_std)
                cells.append(f"{number_text(drop, '+.1f')} / {number_text(100 * (acc - base_acc), '+.1f')}"
                             + ("†" if spread else "") if rs else "–")
                if rs:
                    body.append([wl, d, a, len(rs), theirs.get("none", ""), theirs.get(a, ""), base_acc, acc,
                                 int(spread)])
            md_rows.append(cells)
        if md_rows:
            md += [f"\n**{wl}** — accuracy without attack, and under each attack minus it, in points "
                   f"(means over seeds): the paper's Table I, {PAPER_ROW[wl]} row / ours; † inside the seed "
                   f"spread (at most the larger standard deviation over seeds of the two accuracies)\n"]
            md += md_table(["defense", "clean", *attacks], md_rows)
    if not md:
        return None
    header = ["workload", "defense", "attack", "seeds", "paper_clean", "paper_acc", "clean_mean", "acc_mean",
              "inside_seed_spread"]
    return "\n".join(md) + "\n", csv_text(header, body)


# -- Table III: ablation and per-step removal -------------------------------------------------------
def ablation_name(label: str) -> str:
    """Table III's row names: ``FedAvg``, ``step 1``, ``steps 1-2``, ..., ``steps 1-4 (HeteroFL)``."""
    if label == "fedavg":
        return "FedAvg"
    match = re.fullmatch(r"heterofl(?:\[([0-9,-]+)\])?(.*)", label)
    if not match:
        return label
    steps = match.group(1) or steps_label(ALL_STEPS)
    name = f"step {steps}" if steps.isdigit() else f"steps {steps}"
    return name + (" (HeteroFL)" if match.group(1) is None else "") + match.group(2)


def ablation_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Table III (``ACC / ARSR`` per attack), or None when no HeteroFL run leaves out a step."""
    if not any(r.steps and r.steps != ALL_STEPS for r in runs):
        return None
    return _pair_table(runs, ablation=True, first=lambda r: r.final_acc, second=lambda r: r.arsr, first_spec=".4f",
                       title="ablation (Table III): final accuracy / ARSR (mean over seeds)",
                       csv_names=("acc_mean", "arsr_mean"))


def oracle_rounds(run: Run) -> Tuple[int, int]:
    """``(rounds whose oracle predicted the server's kept set exactly, rounds with a prediction)``
    from the run's ``oracle_agrees`` column (adaptive attack with full knowledge)."""
    values = [float(r["oracle_agrees"]) for r in run.rows if r.get("oracle_agrees") not in (None, "")]
    return int(sum(values)), len(values)


def oracle_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Per workload and defense: rounds where the adaptive attack's oracle predicted the server's
    kept set exactly / rounds with a prediction (summed over seeds); None without such rounds."""
    counted = [(r, *oracle_rounds(r)) for r in runs]
    counted = [c for c in counted if c[2]]
    if not counted:
        return None
    md: List[str] = []
    body: List[List[Any]] = []
    for wl in workloads_of([c[0] for c in counted]):
        table = []
        for d in rows_of([c[0] for c in counted if c[0].workload == wl]):
            cells = [c for c in counted if c[0].workload == wl and c[0].row == d]
            agree, total = sum(c[1] for c in cells), sum(c[2] for c in cells)
            table.append([d, f"{agree}/{total}", number_text(agree / total, ".3f"), str(len(cells))])
            body.append([wl, d, len(cells), agree, total])
        md += [f"\n**{wl}** — adaptive attack: rounds whose oracle predicted the server's kept set exactly\n"]
        md += md_table(["defense", "agreeing rounds", "rate", "runs"], table)
    return "\n".join(md) + "\n", csv_text(["workload", "defense", "runs", "agreeing_rounds", "rounds"], body)


def calibration_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Runs without attack that differ in the learning rate (a calibration grid): per workload and row
    (the defense with its ``lr=``), test accuracy after every :data:`CALIBRATION_EVERY`-th round and
    after the last, among the rounds every run of the row evaluated (mean ± std over seeds); None when
    no runs without attack differ in the learning rate."""
    clean = [r for r in runs if r.attack == "none"]
    if "lr" not in swept(clean):
        return None

    def accuracy(run: Run) -> Dict[int, float]:  # rounds counted from 1
        return {int(row["round"]) + 1: to_float(row["test_acc"]) for row in run.rows
                if row.get("test_acc") not in (None, "")}

    md: List[str] = []
    body: List[List[Any]] = []
    for wl in workloads_of(clean):
        wl_runs = [r for r in clean if r.workload == wl]
        labels_ = sorted({r.row for r in wl_runs}, key=lambda label: min(r.lr for r in wl_runs if r.row == label))
        curves = {label: [accuracy(r) for r in wl_runs if r.row == label] for label in labels_}
        last = max(max(c) for cs in curves.values() for c in cs if c)
        rounds = sorted({t for t in range(CALIBRATION_EVERY, last + 1, CALIBRATION_EVERY)} | {last})
        table = []
        for label in labels_:
            row = [label]
            for t in rounds:
                values = [c[t] for c in curves[label] if t in c]
                mean, std = mean_and_std(values) if len(values) == len(curves[label]) else (math.nan, math.nan)
                row.append(mean_text(mean, std, len(values)))
                body.append([wl, label, t, len(values), mean, std])
            table.append(row)
        md += [f"\n**{wl}** — calibration without attack: test accuracy after R rounds (mean ± std over seeds)\n"]
        md += md_table(["run", *[f"R = {t}" for t in rounds]], table)
    return "\n".join(md) + "\n", csv_text(["workload", "run", "rounds", "seeds", "acc_mean", "acc_std"], body)


@dataclass
class StepRemoval:
    """One step's removals in one run, means over rounds: attackers and benign clients removed per
    round, and ``rate`` = attackers removed / f (NaN without attackers)."""

    attackers: float
    benign: float
    rate: float



def step_removal(run: Run) -> Dict[str, StepRemoval]:
    """Per step the run has columns for (``removed_<step>``), its mean removals per round."""
    out: Dict[str, StepRemoval] = {}
    for step in STEP_NAMES.values():
        removed = [to_float(r.get(f"removed_{step}")) for r in run.rows]
        if not finite_values(removed):
            continue
        attackers = [to_float(r.get(f"removed_malicious_{step}")) for r in run.rows]
        benign = [t - m for t, m in zip(removed, attackers)]
        out[step] = StepRemoval(mean_of(attackers), mean_of(benign), mean_of(step_rates(r, step) for r in run.rows))
    return out


def steps_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Each HeteroFL step's removals per variant × attack (mean over seeds), or None without HeteroFL
    runs."""
    het = [r for r in runs if r.steps]
    if not het:
        return None
    groups = group(het)
    header = [f"step {s}: {name.replace('_', ' ')}" for s, name in sorted(STEP_NAMES.items())]
    md: List[str] = []
    body: List[List[Any]] = []
    for wl in workloads_of(het):
        wl_runs = [r for r in het if r.workload == wl]
        md_rows = []
        for d in rows_of(wl_runs, ablation=True):
            for a in columns_of(wl_runs):
                rs = groups.get((wl, d, a), [])
                if not rs:
                    continue
                per_run = [step_removal(r) for r in rs]
                cells = [d, a]
                for s, step in sorted(STEP_NAMES.items()):
                    got = [p[step] for p in per_run if step in p]
                    if not got:
                        cells.append("–")
                        continue
                    att, ben = mean_of(g.attackers for g in got), mean_of(g.benign for g in got)
                    rate = mean_of(g.rate for g in got)
                    cells.append(f"{att:.2f}" + (f" ({rate:.0%})" if not math.isnan(rate) else "") + f" / {ben:.2f}")
                    body.append([wl, d, a, len(got), s, step, att, ben, rate])
                arsr, fpr = mean_of(r.arsr for r in rs), mean_of(r.fpr for r in rs)
                cells.append(f"{number_text(arsr, '.0%')} / {number_text(fpr, '.0%')}")
                md_rows.append(cells)
        md += [f"\n**{wl}** — removals per round by each HeteroFL step (mean over rounds and seeds): "
               "attackers removed (share of the f attackers) / benign clients removed; last column ARSR / FPR\n"]
        md += md_table(["defense", "attack", *header, "all steps: ARSR / FPR"], md_rows)
    csv_header = ["workload", "defense", "attack", "seeds", "step", "step_name", "attackers_removed_per_round",
                  "benign_removed_per_round", "attacker_removal_rate"]
    return "\n".join(md) + "\n", csv_text(csv_header, body)


# -- every table ------------------------------------------------------------------------------------
def tables(runs: List[Run], target: Optional[float] = None) -> Dict[str, Tuple[str, str]]:
    """``{name: (markdown, csv)}`` of every table that applies to ``runs``."""
    out = {"table_accuracy": accuracy_table(runs), "table_removal": removal_table(runs)}
    for name, table in (("table_drops", drops_table(runs)),
                        ("table_ablation", ablation_table(runs)), ("table_steps", steps_table(runs)),
                        ("table_oracle", oracle_table(runs)), ("table_calibration", calibration_table(runs))):
        if table is not None:
            out[name] = table
    out["table_time"] = time_table(runs, target)
    return out
