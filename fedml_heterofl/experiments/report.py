"""``fedml-heterofl report RESULTS_DIR``: tables and plots from result folders.

Reads every finished run folder under ``RESULTS_DIR`` (``summary.json``, ``metrics.csv``,
``config.yaml``; unfinished runs are left out; a run whose files cannot be read is skipped with a
warning naming the file) and writes, into ``RESULTS_DIR/report/``:

* ``table_accuracy.md`` / ``.csv`` — Table I style: rows defense, columns attack, final test accuracy
  as mean ± std over seeds, and the best accuracy of each run (mean ± std over seeds) beside it;
* ``table_drops.md`` / ``.csv`` — beside the paper's Table I (:mod:`~fedml_heterofl.experiments.paper`),
  for workloads it has a row for: each rule's accuracy without attack and, under each attack, its
  accuracy minus that, in points, paper / ours;
* ``table_removal.md`` / ``.csv`` — mean removal success rate (ARSR) and FPR per defense × attack;
* ``table_ablation.md`` / ``.csv`` — Table III style, when HeteroFL runs with fewer than four steps
  exist: rows FedAvg, step 1, steps 1-2, 1-3, 1-4 and the other defenses, cells "ACC / ARSR";
* ``table_steps.md`` / ``.csv`` — for each HeteroFL variant × attack, the attackers and benign clients
  each step removed per round (mean over rounds and seeds) and the step's share of the f attackers;
* ``table_oracle.md`` / ``.csv`` — for adaptive-attack runs with full knowledge, per defense: the
  rounds whose oracle predicted the server's kept set exactly, out of all their rounds;
* ``table_calibration.md`` / ``.csv`` — when runs without attack differ in the learning rate (a
  calibration grid): test accuracy after every 10th round and the last one, per learning rate (mean
  ± std over seeds);
* ``table_time.md`` / ``.csv`` — Table II: the first round whose test accuracy reaches the target, the
  training seconds up to it (and their multiple of FedAvg's), the mean seconds per round; for the
  paper's Table II target where the paper has the workload (its hours beside), and for 95 % of
  FedAvg's clean accuracy (or ``--target``);
* the figures of :mod:`~fedml_heterofl.experiments.figures` (accuracy per round with a band over seeds,
  removal per HeteroFL step, the sweeps, the ablation, the trigger-share study);
* ``README.md`` — every table and a link to every plot.

Labels come from the stored files only (no summary field is needed beyond the ones every run writes):
a HeteroFL run whose ``defense_args.defense_params.steps`` is not all four steps is ``heterofl[1-2]``
etc.; a run without a defense is ``fedavg``. When the runs differ in a swept value, the table rows
carry it (HeteroFL's ``λ`` and ``|D_trg|``: ``heterofl λ=-2``; the clients' mean number of training
samples: ``fedavg 200/client``; the learning rate: ``fedavg lr=0.002``) and so do the attack columns (the attackers' share: ``min_max 30%``),
so no table cell mixes settings. Where HeteroFL runs, the accuracy table also gives the accuracy over
the task's classes and the share of test images predicted as the watermark class.

Time columns: ``time_server`` is measured around the whole server round (model poisoning, the
defense, FLTrust's server update) and so already holds ``time_attack`` and ``time_defend``; a round's
training time is ``time_train + time_server`` (evaluation, ``time_eval``, is not counted).

The Markdown accuracy tables are also printed.

``fedml-heterofl summary LABEL=FOLDER ...`` prints docs/results.md's summary table instead: one row per
Table I folder (:func:`summary_row`), read from the same files.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import logging
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from fedml_heterofl.cli import one_line, report_error
from fedml_heterofl.attack.adaptive import Adaptive
from fedml_heterofl.defense.heterofl import STEP_NAMES, HeteroFL
from fedml_heterofl.experiments.paper import PAPER_ROW, TIME_COLUMN, paper_accuracy, paper_time
from fedml_heterofl.settings import DataArgs
from fedml_heterofl.yaml_input import parse_yaml

log = logging.getLogger(__name__)

#: summary.json fields every run writes and the report reads as labels
SUMMARY_LABELS = ("defense", "attack", "dataset", "model")
#: the accuracies of ``summary.json`` the report reads
SUMMARY_ACCURACIES = ("final_acc", "best_acc", "final_acc_task")
#: column order of attacks (Table I) and row order of defenses
ATTACK_ORDER = ("none", "adaptive", "min_max", "min_sum", "alie", "ipm", "label_flip", "sign_flip")
#: our rules (the paper's baselines, then the breadth rules); FedML's own (``fedml:<name>``) come
#: after them, alphabetically, and HeteroFL last
DEFENSE_ORDER = ("fedavg", "multikrum", "median", "zeno", "fltrust", "dnc", "trimmed_mean", "bulyan", "geomed",
                 "centered_clipping", "fedml:", "heterofl")
#: HeteroFL's steps in order, and its defaults for values a config may leave out
ALL_STEPS: Tuple[int, ...] = tuple(sorted(STEP_NAMES))
DEFAULT_LAM = float(inspect.signature(HeteroFL).parameters["lam"].default)
DEFAULT_TRIGGER_SIZE = DataArgs().trigger_size
DEFAULT_GAMMA_INIT = float(inspect.signature(Adaptive).parameters["gamma_init"].default)
DEFAULT_PERTURBATION = str(inspect.signature(Adaptive).parameters["perturbation"].default)
#: per-round columns that make up a round's training time (``time_server`` holds attack and defense)
TIME_COLUMNS = ("time_train", "time_server")
#: share of FedAvg's no-attack final accuracy used as the time-to-accuracy target
TARGET_SHARE = 0.95
#: values a grid may sweep (:func:`swept`): run attribute -> (axis label, plot file, plot ARSR too)
SWEEPS: Dict[str, Tuple[str, str, bool]] = {
    "fraction": ("attacker fraction f / n", "accuracy_vs_fraction.png", False),
    "lam": ("λ (loss reduction threshold)", "accuracy_vs_lambda.png", True),
    "trigger_size": ("|D_trg| (trigger set size)", "accuracy_vs_trigger_size.png", True),
    "samples": ("training samples per client (mean)", "accuracy_vs_samples.png", True),
    "lr": ("learning rate", "accuracy_vs_lr.png", False),
    "q": ("data heterogeneity: Dirichlet q (IID: q → ∞)", "accuracy_vs_heterogeneity.png", True),
    "gamma_init": ("γ_init of the adaptive attack", "accuracy_vs_gamma_init.png", True),
}
#: swept values that only label rows (categories; a sweep plot draws a line per value)
LABEL_SWEEPS = ("perturbation",)
#: the calibration table gives the accuracy after every this many rounds (and after the last)
CALIBRATION_EVERY = 10

Key = Tuple[str, str, str]  # (workload, table row label, table column label)


# -- runs -----------------------------------------------------------------------------------------
@dataclass
class Run:
    """One finished run folder with the labels the report groups it by.

    ``defense`` is the defense label (``fedavg``, ``heterofl[1-2]``, ``multikrum`` ...); ``lam`` and
    ``trigger_size`` are set for HeteroFL runs only and ``fraction`` (attackers / clients) for attacked
    runs only; ``q`` is the Dirichlet concentration of the partition (``math.inf`` for an IID split, None
    for a natural one); ``gamma_init`` and ``perturbation`` are set for adaptive-attack runs only. ``row`` and ``column`` are the table labels, set by :func:`load_runs`.
    """

    name: str
    summary: Dict[str, Any]
    rows: List[Dict[str, str]]
    config: Dict[str, Any]
    workload: str
    defense: str
    attack: str
    steps: Tuple[int, ...] = ()
    fraction: Optional[float] = None
    lam: Optional[float] = None
    trigger_size: Optional[int] = None
    samples: Optional[float] = None
    lr: Optional[float] = None
    q: Optional[float] = None
    gamma_init: Optional[float] = None
    perturbation: Optional[str] = None
    row: str = ""
    column: str = ""

    @property
    def final_acc(self) -> float:
        return _float(self.summary.get("final_acc"))

    @property
    def final_acc_task(self) -> float:
        """Final accuracy over the task's L classes (HeteroFL's watermark output ignored); a run
        without the watermark output, or from before this column, has ``final_acc`` there."""
        if "final_acc_task" in self.summary:
            return _float(self.summary["final_acc_task"])
        return math.nan if self.steps else self.final_acc

    @property
    def final_watermark_share(self) -> float:
        """Share of the test inputs the final model predicts as HeteroFL's watermark class (0 without
        that output; NaN for a run from before this column)."""
        if "final_watermark_share" in self.summary:
            return _float(self.summary["final_watermark_share"])
        return math.nan if self.steps else 0.0

    @property
    def best_acc(self) -> float:
        return _float(self.summary.get("best_acc"))

    @property
    def arsr(self) -> float:
        """Mean removal success rate over the rounds (NaN without attackers)."""
        return _float(self.summary.get("mean_removal_success_rate"))

    @property
    def fpr(self) -> float:
        return _float(self.summary.get("mean_fpr"))


def _config_get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]["c"]`` for ``"a.b.c"``, or ``default`` when a level is missing or null."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            return default
        value = value[part]
    return value


def steps_label(steps: Sequence[int]) -> str:
    """``[1, 2, 4]`` -> ``"1-2,4"``: consecutive steps as ranges."""
    parts: List[str] = []
    for s in sorted(steps):
        if parts and int(parts[-1].split("-")[-1]) == s - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{s}"
        else:
            parts.append(str(s))
    return ",".join(parts)


def defense_label(defense: str, config: Mapping[str, Any]) -> str:
    """``fedavg`` without a defense; ``heterofl[1-3]`` for HeteroFL with some of its steps (Table III);
    else the defense name (``heterofl`` with all four steps)."""
    if not _config_get(config, "defense_args.enable_defense", defense != "fedavg"):
        return "fedavg"
    if defense == "heterofl":
        steps = _heterofl_steps(config)
        return "heterofl" if steps == ALL_STEPS else f"heterofl[{steps_label(steps)}]"
    return defense


def _heterofl_steps(config: Mapping[str, Any]) -> Tuple[int, ...]:
    return tuple(sorted(int(s) for s in _config_get(config, "defense_args.defense_params.steps", ALL_STEPS)))


class DamagedRunFile(ValueError):
    """A run folder's file cannot be read or lacks what the report needs (the message names the file)."""


def _load(path: Path, parse: Callable[[str], Any], kind: type) -> Any:
    """``parse`` of the text of ``path``, checked to be a ``kind``; :class:`DamagedRunFile` otherwise."""
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, csv.Error) as exc:
        raise DamagedRunFile(f"{path}: {one_line(str(exc)) or type(exc).__name__}") from None
    if not isinstance(value, kind):
        raise DamagedRunFile(f"{path}: expected a {kind.__name__}, got {type(value).__name__}")
    return value


def read_run(folder: Path) -> Optional[Run]:
    """The run in ``folder``, or None when it has not finished (no ``summary.json`` with ``finished``).

    Raises :class:`DamagedRunFile` when one of its files cannot be read or lacks what the report reads.
    """
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        return None
    summary = _load(summary_path, json.loads, dict)
    if not summary.get("finished"):
        return None
    missing = [key for key in SUMMARY_LABELS if not isinstance(summary.get(key), str)]
    if missing:
        raise DamagedRunFile(f"{summary_path}: no {', '.join(missing)} (text)")
    for key in SUMMARY_ACCURACIES:  # a run writes null for an accuracy it has not measured, never NaN
        value = summary.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise DamagedRunFile(f"{summary_path}: {key} is {value!r}; allowed: an accuracy in [0, 1] or null")
    metrics_path = folder / "metrics.csv"
    rows = _load(metrics_path, lambda text: list(csv.DictReader(io.StringIO(text))), list)
    if not all(str(row.get("round")).isdigit() for row in rows):
        raise DamagedRunFile(f"{metrics_path}: a row without a round number")
    config_path = folder / "config.yaml"
    config = (_load(config_path, lambda text: parse_yaml(text, str(config_path)) or {}, dict)
              if config_path.exists() else {})
    try:
        label = defense_label(summary["defense"], config)
        heterofl = summary["defense"] == "heterofl"
        f = int(_config_get(config, "attack_args.byzantine_client_num", len(summary.get("malicious") or [])))
        attacked = summary["attack"] != "none" and f > 0
        adaptive = summary["attack"] == "adaptive" and attacked
        n = int(_config_get(config, "train_args.client_num_in_total", 0))
        return Run(
            name=folder.name, summary=summary, rows=rows, config=config,
            workload=f"{summary['dataset']}/{summary['model']}", defense=label, attack=summary["attack"],
            steps=_heterofl_steps(config) if heterofl else (),
            fraction=f / n if attacked and n else None,
            lam=float(_config_get(config, "defense_args.defense_params.lam", DEFAULT_LAM)) if heterofl else None,
            trigger_size=int(_config_get(config, "data_args.trigger_size", DEFAULT_TRIGGER_SIZE)) if heterofl else None,
            samples=_float(summary["samples_per_client"]) if "samples_per_client" in summary else None,
            lr=float(_config_get(config, "train_args.learning_rate")) if _config_get(
                config, "train_args.learning_rate") is not None else None,
            q=_heterogeneity(config),
            gamma_init=float(_config_get(config, "attack_args.attack_params.gamma_init", DEFAULT_GAMMA_INIT))
            if adaptive else None,
            perturbation=str(_config_get(config, "attack_args.attack_params.perturbation", DEFAULT_PERTURBATION))
            if adaptive else None,
        )
    except (TypeError, ValueError) as exc:
        raise DamagedRunFile(f"{config_path}: {exc}") from None


def _heterogeneity(config: Mapping[str, Any]) -> Optional[float]:
    """The partition's Dirichlet q: ``partition_alpha`` for ``hetero``, ``math.inf`` for ``homo`` (IID,
    the limit q → ∞), None for ``natural`` (or no partition in the config)."""
    method = _config_get(config, "data_args.partition_method")
    if method == "homo":
        return math.inf
    alpha = _config_get(config, "data_args.partition_alpha")
    return float(alpha) if method == "hetero" and alpha is not None else None


def q_label(q: float) -> str:
    """``q=0.2``, or ``IID`` for q = ∞."""
    return "IID" if math.isinf(q) else f"q={q:g}"


def swept(runs: Iterable[Run]) -> List[str]:
    """The :data:`SWEEPS` and :data:`LABEL_SWEEPS` values that differ between the runs (set on at least two
    distinct values)."""
    runs = list(runs)
    return [p for p in (*SWEEPS, *LABEL_SWEEPS) if len({getattr(r, p) for r in runs if getattr(r, p) is not None}) > 1]


def labels(run: Run, sweeps: Iterable[str]) -> Tuple[str, str]:
    """``(row, column)`` labels of ``run``: the defense and attack labels with the values in ``sweeps``
    that apply to the run (``heterofl λ=-2 |D_trg|=8``, ``min_max 30%``)."""
    sweeps = set(sweeps)
    row = [run.defense]
    if "lam" in sweeps and run.lam is not None:
        row.append(f"λ={run.lam:g}")
    if "trigger_size" in sweeps and run.trigger_size is not None:
        row.append(f"|D_trg|={run.trigger_size}")
    if "samples" in sweeps and run.samples is not None:
        row.append(f"{run.samples:.0f}/client")
    if "lr" in sweeps and run.lr is not None:
        row.append(f"lr={run.lr:g}")
    if "q" in sweeps and run.q is not None:
        row.append(q_label(run.q))
    if "perturbation" in sweeps and run.perturbation is not None:
        row.append(run.perturbation)
    if "gamma_init" in sweeps and run.gamma_init is not None:
        row.append(f"γ_init={run.gamma_init:g}")
    column = run.attack
    if "fraction" in sweeps and run.fraction is not None:
        column += f" {run.fraction:.0%}"
    return " ".join(row), column


def load_runs(results: Path) -> List[Run]:
    """Every finished run under ``results``, with its table labels (:func:`labels`); a damaged run is
    skipped with a warning naming its file."""
    runs = []
    for path in sorted(results.glob("*/summary.json")):
        try:
            run = read_run(path.parent)
        except DamagedRunFile as exc:
            log.warning("skipping a damaged run: %s", exc)
            continue
        if run is not None:
            runs.append(run)
    sweeps = swept(runs)
    for run in runs:
        run.row, run.column = labels(run, sweeps)
    return runs


def group(runs: Iterable[Run]) -> Dict[Key, List[Run]]:
    """Runs by ``(workload, row label, column label)``: the seeds of one table cell."""
    out: Dict[Key, List[Run]] = defaultdict(list)
    for run in runs:
        out[(run.workload, run.row, run.column)].append(run)
    return out


def _defense_rank(run: Run, ablation: bool) -> Tuple[Any, ...]:
    """Row order: :data:`DEFENSE_ORDER` (ablation tables: FedAvg, the HeteroFL variants by their
    steps, then the other defenses), then the swept values, as numbers (40/client before 192/client)."""
    base = "heterofl" if run.steps else run.defense
    family = "fedml:" if base.startswith("fedml:") else base
    rank = DEFENSE_ORDER.index(family) if family in DEFENSE_ORDER else len(DEFENSE_ORDER)
    if ablation:
        rank = (0 if base == "fedavg" else 1 if base == "heterofl" else 2, rank)
    return (rank, base, run.steps, run.lam or 0.0, run.trigger_size or 0, run.samples or 0.0, run.lr or 0.0,
            run.q or 0.0, run.perturbation or "", run.gamma_init or 0.0, run.row)


def _attack_rank(run: Run) -> Tuple[Any, ...]:
    rank = ATTACK_ORDER.index(run.attack) if run.attack in ATTACK_ORDER else len(ATTACK_ORDER)
    return (rank, run.attack, run.fraction or 0.0, run.column)


def _ordered(runs: Iterable[Run], rank: Callable[[Run], Tuple[Any, ...]], attr: str) -> List[str]:
    """The distinct ``attr`` labels of ``runs`` in the order of ``rank``."""
    first: Dict[str, Tuple[Any, ...]] = {}
    for run in runs:
        first.setdefault(getattr(run, attr), rank(run))
    return sorted(first, key=first.__getitem__)


def rows_of(runs: Iterable[Run], *, ablation: bool = False) -> List[str]:
    return _ordered(runs, lambda r: _defense_rank(r, ablation), "row")


def columns_of(runs: Iterable[Run]) -> List[str]:
    return _ordered(runs, _attack_rank, "column")


def workloads_of(runs: Iterable[Run]) -> List[str]:
    return sorted({r.workload for r in runs})


# -- small helpers ----------------------------------------------------------------------------------
def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(values: Iterable[float]) -> List[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean(values: Iterable[float]) -> float:
    vals = _finite(values)
    return statistics.fmean(vals) if vals else math.nan


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the non-NaN values."""
    vals = _finite(values)
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(mean: float, std: float, n: int) -> str:
    """``0.8500 ± 0.0707`` (one seed: ``0.8500``; nothing: ``–``)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _num(value: float, spec: str = ".2f") -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> List[str]:
    """A Markdown table; a ``|`` inside a cell (``|D_trg|=4``) is escaped so it does not split the cell."""
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [row(header), "|---" * len(header) + "|"] + [row(cells) for cells in body]


def _csv(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def _slug(text: str) -> str:
    """A file-name-safe version of a label (``mnist/lr`` -> ``mnist_lr``)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


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
        for d in rows_of(wl_runs):
            rows = [[d] for _ in metrics]
            for a in columns:
                rs = groups.get((wl, d, a), [])
                stats = [_mean_std([value(r) for r in rs]) for _, value in metrics]
                for row, (mean, std) in zip(rows, stats):
                    row.append(_fmt(mean, std, len(rs)))
                if rs:
                    body.append([wl, d, a, len(rs), *[x for pair in stats for x in pair]])
            for table, row in zip(tables, rows):
                table.append(row)
        shown = len(metrics) if any(r.steps for r in wl_runs) else len(metrics) - 2
        for (title, _), table in list(zip(metrics, tables))[:shown]:
            md += [f"\n**{wl}** — {title}\n"]
            md += _md_table(["defense", *columns], table)
    header = ["workload", "defense", "attack", "seeds", "final_acc_mean", "final_acc_std", "best_acc_mean",
              "best_acc_std", "final_acc_task_mean", "final_acc_task_std", "watermark_share_mean",
              "watermark_share_std"]
    return "\n".join(md) + "\n", _csv(header, body)


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
                x, y = _mean(first(r) for r in rs), _mean(second(r) for r in rs)
                cells.append(f"{_num(x, first_spec)} / {_num(y)}" if rs else "–")
                if rs:
                    body.append([wl, d, a, len(rs), x, y])
            md_rows.append(cells)
        md += [f"\n**{wl}** — {title}\n"]
        md += _md_table(["setting" if ablation else "defense", *columns], md_rows)
    return "\n".join(md) + "\n", _csv(["workload", "defense", "attack", "seeds", *csv_names], body)


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
    and IPM are not in the paper's table). None when no workload has both."""
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
            clean = _mean(r.final_acc for r in groups.get((wl, d, "none"), []))
            if math.isnan(clean):
                continue
            theirs = paper.get(d, {})
            cells = [d, f"{_num(theirs.get('none', math.nan), '.3f')} / {clean:.3f}"]
            for a in attacks:
                rs = groups.get((wl, d, a), [])
                acc = _mean(r.final_acc for r in rs)
                drop = 100 * (theirs[a] - theirs["none"]) if a in theirs else math.nan
                cells.append(f"{_num(drop, '+.1f')} / {_num(100 * (acc - clean), '+.1f')}" if rs else "–")
                if rs:
                    body.append([wl, d, a, len(rs), theirs.get("none", ""), theirs.get(a, ""), clean, acc])
            md_rows.append(cells)
        if md_rows:
            md += [f"\n**{wl}** — accuracy without attack, and under each attack minus it, in points "
                   f"(means over seeds): the paper's Table I, {PAPER_ROW[wl]} row / ours\n"]
            md += _md_table(["defense", "clean", *attacks], md_rows)
    if not md:
        return None
    header = ["workload", "defense", "attack", "seeds", "paper_clean", "paper_acc", "clean_mean", "acc_mean"]
    return "\n".join(md) + "\n", _csv(header, body)


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
            table.append([d, f"{agree}/{total}", _num(agree / total, ".3f"), str(len(cells))])
            body.append([wl, d, len(cells), agree, total])
        md += [f"\n**{wl}** — adaptive attack: rounds whose oracle predicted the server's kept set exactly\n"]
        md += _md_table(["defense", "agreeing rounds", "rate", "runs"], table)
    return "\n".join(md) + "\n", _csv(["workload", "defense", "runs", "agreeing_rounds", "rounds"], body)


def calibration_table(runs: List[Run]) -> Optional[Tuple[str, str]]:
    """Runs without attack that differ in the learning rate (a calibration grid): per workload and row
    (the defense with its ``lr=``), test accuracy after every :data:`CALIBRATION_EVERY`-th round and
    after the last, among the rounds every run of the row evaluated (mean ± std over seeds); None when
    no runs without attack differ in the learning rate."""
    clean = [r for r in runs if r.attack == "none"]
    if "lr" not in swept(clean):
        return None

    def accuracy(run: Run) -> Dict[int, float]:  # rounds counted from 1
        return {int(row["round"]) + 1: _float(row["test_acc"]) for row in run.rows
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
                mean, std = _mean_std(values) if len(values) == len(curves[label]) else (math.nan, math.nan)
                row.append(_fmt(mean, std, len(values)))
                body.append([wl, label, t, len(values), mean, std])
            table.append(row)
        md += [f"\n**{wl}** — calibration without attack: test accuracy after R rounds (mean ± std over seeds)\n"]
        md += _md_table(["run", *[f"R = {t}" for t in rounds]], table)
    return "\n".join(md) + "\n", _csv(["workload", "run", "rounds", "seeds", "acc_mean", "acc_std"], body)


@dataclass
class StepRemoval:
    """One step's removals in one run, means over rounds: attackers and benign clients removed per
    round, and ``rate`` = attackers removed / f (NaN without attackers)."""

    attackers: float
    benign: float
    rate: float


def step_rates(row: Mapping[str, str], step: str) -> float:
    """The share of the round's f attackers that ``step`` removed.

    f is not a column, but ``removal_success_rate`` = ``removed_malicious`` / f, so the share is
    ``removed_malicious_<step>`` / ``removed_malicious`` × ``removal_success_rate`` (0 when the round
    removed no attacker, NaN when it had none)."""
    rsr = _float(row.get("removal_success_rate"))
    removed = _float(row.get("removed_malicious"))
    by_step = _float(row.get(f"removed_malicious_{step}"))
    if math.isnan(rsr) or math.isnan(by_step):
        return math.nan
    return by_step / removed * rsr if removed > 0 else 0.0


def step_removal(run: Run) -> Dict[str, StepRemoval]:
    """Per step the run has columns for (``removed_<step>``), its mean removals per round."""
    out: Dict[str, StepRemoval] = {}
    for step in STEP_NAMES.values():
        removed = [_float(r.get(f"removed_{step}")) for r in run.rows]
        if not _finite(removed):
            continue
        attackers = [_float(r.get(f"removed_malicious_{step}")) for r in run.rows]
        benign = [t - m for t, m in zip(removed, attackers)]
        out[step] = StepRemoval(_mean(attackers), _mean(benign), _mean(step_rates(r, step) for r in run.rows))
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
                    att, ben = _mean(g.attackers for g in got), _mean(g.benign for g in got)
                    rate = _mean(g.rate for g in got)
                    cells.append(f"{att:.2f}" + (f" ({rate:.0%})" if not math.isnan(rate) else "") + f" / {ben:.2f}")
                    body.append([wl, d, a, len(got), s, step, att, ben, rate])
                cells.append(f"{_num(_mean(r.arsr for r in rs), '.0%')} / {_num(_mean(r.fpr for r in rs), '.0%')}")
                md_rows.append(cells)
        md += [f"\n**{wl}** — removals per round by each HeteroFL step (mean over rounds and seeds): "
               "attackers removed (share of the f attackers) / benign clients removed; last column ARSR / FPR\n"]
        md += _md_table(["defense", "attack", *header, "all steps: ARSR / FPR"], md_rows)
    csv_header = ["workload", "defense", "attack", "seeds", "step", "step_name", "attackers_removed_per_round",
                  "benign_removed_per_round", "attacker_removal_rate"]
    return "\n".join(md) + "\n", _csv(csv_header, body)


# -- Table II: time to accuracy ---------------------------------------------------------------------
def round_seconds(row: Mapping[str, str]) -> float:
    """A round's training time: the :data:`TIME_COLUMNS` it has (NaN when it has none)."""
    values = _finite(_float(row.get(c)) for c in TIME_COLUMNS)
    return sum(values) if values else math.nan


def time_to_accuracy(run: Run, target: float) -> Optional[Tuple[int, float]]:
    """``(rounds, seconds)`` up to the first evaluated round whose test accuracy is at least
    ``target``: rounds trained (the 0-based round index + 1) and the sum of :func:`round_seconds`
    over those rounds; None when the run never reaches the target."""
    seconds = 0.0
    for row in sorted(run.rows, key=lambda r: int(r["round"])):
        spent = round_seconds(row)
        seconds += 0.0 if math.isnan(spent) else spent
        if _float(row.get("test_acc")) >= target:
            return int(row["round"]) + 1, seconds
    return None


def accuracy_target(runs: List[Run], workload: str, target: Optional[float]) -> Tuple[Optional[float], str]:
    """``(target, how it was set)``: ``target`` when given (``--target``, e.g. the paper's fixed 0.8),
    else :data:`TARGET_SHARE` of the mean final accuracy of the workload's FedAvg runs without attack,
    else None."""
    if target is not None:
        return target, "--target"
    baseline = _mean(r.final_acc for r in runs if r.workload == workload and r.defense == "fedavg"
                     and r.attack == "none")
    if not math.isnan(baseline):
        return TARGET_SHARE * baseline, f"{TARGET_SHARE:.0%} of FedAvg without attack ({baseline:.4f})"
    return None, "no FedAvg run without attack and no --target"


def _times_to(runs: List[Run], goal: Optional[float]) -> Tuple[int, float, float]:
    """``(seeds reaching, mean rounds, mean seconds)`` to ``goal`` over ``runs`` (means over the seeds
    that reach it: NaN when none does or there is no goal)."""
    hits = [h for h in (time_to_accuracy(r, goal) for r in runs) if h] if goal is not None else []
    return len(hits), _mean(h[0] for h in hits), _mean(h[1] for h in hits)


def _ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23×``; ``–`` where either is missing."""
    return "–" if math.isnan(value) or math.isnan(reference) or reference <= 0 else f"{value / reference:.2f}×"


def time_table(runs: List[Run], target: Optional[float] = None) -> Tuple[str, str]:
    """Table II: rounds and training seconds until the test accuracy first reaches a target, per
    workload × defense × attack (means over the seeds that reach it; ``never`` when none does), and the
    seconds as a multiple of FedAvg's under the same attack. Each workload gets the paper's Table II
    target where the paper has the workload (:func:`~fedml_heterofl.experiments.paper.paper_time`, with
    the paper's hours and their multiple of FedAvg's beside the rows without attack), and
    :func:`accuracy_target`'s (``--target`` or a share of FedAvg's clean accuracy)."""
    groups = group(runs)
    md: List[str] = []
    body: List[List[Any]] = []
    for wl in workloads_of(runs):
        wl_runs = [r for r in runs if r.workload == wl]
        paper_goal, paper_hours = paper_time(wl)
        goals = [accuracy_target(runs, wl, target)]
        if paper_goal is not None:
            goals.insert(0, (paper_goal, f"the paper's Table II target for {TIME_COLUMN[wl]}"))
        for goal, source in goals:
            paper = goal == paper_goal and paper_goal is not None
            cells = {(d, a): (rs, *_times_to(rs, goal)) for d in rows_of(wl_runs) for a in columns_of(wl_runs)
                     if (rs := groups.get((wl, d, a), []))}
            md_rows = []
            for (d, a), (rs, hits, rounds, seconds) in cells.items():
                fedavg_seconds = cells.get(("fedavg", a), (None, 0, math.nan, math.nan))[3]
                per_round = _mean(_mean(round_seconds(row) for row in r.rows) for r in rs)
                reached = "no target" if goal is None else (f"{hits}/{len(rs)}" if hits else "never")
                row = [d, a, reached, _num(rounds, ".1f"), _num(seconds, ".2f"), _ratio(seconds, fedavg_seconds),
                       _num(per_round, ".3f")]
                if paper:
                    hours = paper_hours.get(d, math.nan) if a == "none" else math.nan
                    row.append("–" if math.isnan(hours) else
                               f"{hours:g} h ({_ratio(hours, paper_hours.get('fedavg', math.nan))})")
                md_rows.append(row)
                body.append([wl, d, a, goal if goal is not None else "", source, len(rs), hits, rounds, seconds,
                             per_round])
            md += [f"\n**{wl}** — time to accuracy; target {'–' if goal is None else f'{goal:.4f}'} ({source}); "
                   "seconds = time_train + time_server\n"]
            md += _md_table(["defense", "attack", "seeds reaching", "rounds to target", "seconds to target",
                             "× FedAvg", "seconds / round"] + (["paper: hours (× FedAvg)"] if paper else []), md_rows)
    header = ["workload", "defense", "attack", "target", "target_source", "seeds", "seeds_reached",
              "rounds_to_target_mean", "seconds_to_target_mean", "seconds_per_round_mean"]
    return "\n".join(md) + "\n", _csv(header, body)


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


# -- the summary table of docs/results.md --------------------------------------------------------------
SUMMARY_HEADER = ("workload", "clients / attackers", "samples per client", "rounds", "seeds", "FedAvg clean",
                  "HeteroFL clean", "HeteroFL worst under attack", "worst attack")


def _span(values: Iterable[Any]) -> str:
    """``30`` when every value is 30, ``10–30`` when they range from 10 to 30, ``–`` for none."""
    found = sorted({v for v in values if v is not None})
    if not found:
        return "–"
    return f"{found[0]:g}" if len(found) == 1 else f"{found[0]:g}–{found[-1]:g}"


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
    attacked = {column: _mean(accs) for column, accs in heterofl.items() if column != "none"}
    worst = min(attacked, key=attacked.__getitem__) if attacked else None
    samples = _mean(r.samples for r in runs if r.samples is not None)
    caps = {_config_get(r.config, "data_args.max_samples_per_client") for r in runs}
    cap = f"; cap {caps.pop()}" if len(caps) == 1 and None not in caps else ""
    clients = _span(_config_get(r.config, "train_args.client_num_in_total") for r in runs)
    attackers = _span(_config_get(r.config, "attack_args.byzantine_client_num") for r in runs)
    return [label, f"{clients} / {attackers}", "–" if math.isnan(samples) else f"{samples:.0f} (mean{cap})",
            _span(r.summary.get("rounds") for r in runs), str(len({r.summary.get("seed") for r in runs})),
            _num(_mean(fedavg), ".4f"), _num(_mean(heterofl.get("none", [])), ".4f"),
            _num(attacked[worst], ".4f") if worst else "–", worst or "–"]


def summary_table(folders: Sequence[Tuple[str, Path]]) -> str:
    """The Markdown summary table of docs/results.md: one :func:`summary_row` per ``(label, folder)``."""
    body = []
    for label, folder in folders:
        runs = load_runs(Path(folder))
        if not runs:
            raise ValueError(f"no finished runs under {folder} (a run folder holds summary.json with finished: true)")
        body.append(summary_row(label, runs))
    return "\n".join(_md_table(SUMMARY_HEADER, body)) + "\n"


def add_summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rows", nargs="+", metavar="LABEL=FOLDER",
                        help="a row's workload label and its Table I folder (e.g. 'MNIST/LR=runs/table1_mnist_lr')")


def parse_summary_rows(rows: Sequence[str]) -> List[Tuple[str, Path]]:
    """``["LABEL=FOLDER", ...]`` -> ``[(label, Path(folder)), ...]`` (split at the last ``=``)."""
    out = []
    for row in rows:
        label, sep, folder = row.rpartition("=")
        if not sep or not label or not folder:
            raise ValueError(f"{row!r}: expected LABEL=FOLDER, e.g. 'MNIST/LR=runs/table1_mnist_lr'")
        out.append((label, Path(folder)))
    return out


def main_summary(args: argparse.Namespace) -> int:
    """``fedml-heterofl summary LABEL=FOLDER ...``: print the summary table of docs/results.md."""
    try:
        print(summary_table(parse_summary_rows(args.rows)), end="")
    except ValueError as exc:
        return report_error("summary", exc)
    return 0
