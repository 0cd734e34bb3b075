"""The finished runs of a results folder, as the report reads and labels them.

A run folder holds ``summary.json``, ``metrics.csv`` and ``config.yaml``
(:mod:`~fedml_heterofl.record.store`); unfinished runs are left out, and a run whose files cannot be read
is skipped with a warning naming the file (:func:`load_runs`).

Labels come from the stored files only (no summary field is needed beyond the ones every run writes):
a HeteroFL run whose ``defense_args.defense_params.steps`` is not all four steps is ``heterofl[1-2]``
etc. (the paper's Table III); a run without a defense is ``fedavg``. When the runs differ in a swept
value (:data:`SWEEPS`), the table rows carry it (HeteroFL's ``λ`` and ``|D_trg|``: ``heterofl λ=-2``; the
clients' mean number of training samples: ``fedavg 200/client``; the learning rate: ``fedavg lr=0.002``)
and so do the attack columns (the attackers' share: ``min_max 30%``), so no table cell mixes settings.
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from fedml_heterofl.attack.adaptive import Adaptive
from fedml_heterofl.messages import one_line
from fedml_heterofl.defense.heterofl import STEP_NAMES, HeteroFL
from fedml_heterofl.experiments.cells import mean_of, to_float
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

Key = Tuple[str, str, str]  # (workload, table row label, table column label)


@dataclass
class Run:
    """One finished run folder with the labels the report groups it by.

    ``defense`` is the defense label (``fedavg``, ``heterofl[1-2]``, ``multikrum`` ...); ``lam`` and
    ``trigger_size`` are set for HeteroFL runs only and ``fraction`` (attackers / clients) for attacked
    runs only; ``q`` is the Dirichlet concentration of the partition (``math.inf`` for an IID split, None
    for a natural one); ``gamma_init`` and ``perturbation`` are set for adaptive-attack runs only.
    ``samples`` is the clients' mean number of training samples (under a per-client cap, the mean over
    the runs :func:`load_runs` reads with that cap). ``row`` and ``column`` are the table labels, set by
    :func:`load_runs`.
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
    def seed(self) -> Optional[int]:
        """The run's ``common_args.random_seed`` as summary.json records it (None if it does not)."""
        seed = self.summary.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def final_acc(self) -> float:
        return to_float(self.summary.get("final_acc"))

    @property
    def final_acc_task(self) -> float:
        """Final accuracy over the task's L classes (HeteroFL's watermark output ignored); a run
        without the watermark output, or from before this column, has ``final_acc`` there."""
        if "final_acc_task" in self.summary:
            return to_float(self.summary["final_acc_task"])
        return math.nan if self.steps else self.final_acc

    @property
    def final_watermark_share(self) -> float:
        """Share of the test inputs the final model predicts as HeteroFL's watermark class (0 without
        that output; NaN for a run from before this column)."""
        if "final_watermark_share" in self.summary:
            return to_float(self.summary["final_watermark_share"])
        return math.nan if self.steps else 0.0

    @property
    def best_acc(self) -> float:
        return to_float(self.summary.get("best_acc"))

    @property
    def arsr(self) -> float:
        """Mean removal success rate over the rounds (NaN without attackers)."""
        return to_float(self.summary.get("mean_removal_success_rate"))

    @property
    def fpr(self) -> float:
        return to_float(self.summary.get("mean_fpr"))


def config_get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
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
    if not config_get(config, "defense_args.enable_defense", defense != "fedavg"):
        return "fedavg"
    if defense == "heterofl":
        steps = _heterofl_steps(config)
        return "heterofl" if steps == ALL_STEPS else f"heterofl[{steps_label(steps)}]"
    return defense


def _heterofl_steps(config: Mapping[str, Any]) -> Tuple[int, ...]:
    return tuple(sorted(int(s) for s in config_get(config, "defense_args.defense_params.steps", ALL_STEPS)))


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
        f = int(config_get(config, "attack_args.byzantine_client_num", len(summary.get("malicious") or [])))
        attacked = summary["attack"] != "none" and f > 0
        adaptive = summary["attack"] == "adaptive" and attacked
        n = int(config_get(config, "train_args.client_num_in_total", 0))
        return Run(
            name=folder.name, summary=summary, rows=rows, config=config,
            workload=f"{summary['dataset']}/{summary['model']}", defense=label, attack=summary["attack"],
            steps=_heterofl_steps(config) if heterofl else (),
            fraction=f / n if attacked and n else None,
            lam=float(config_get(config, "defense_args.defense_params.lam", DEFAULT_LAM)) if heterofl else None,
            trigger_size=int(config_get(config, "data_args.trigger_size", DEFAULT_TRIGGER_SIZE)) if heterofl else None,
            samples=to_float(summary["samples_per_client"]) if "samples_per_client" in summary else None,
            lr=float(config_get(config, "train_args.learning_rate")) if config_get(
                config, "train_args.learning_rate") is not None else None,
            q=_heterogeneity(config),
            gamma_init=float(config_get(config, "attack_args.attack_params.gamma_init", DEFAULT_GAMMA_INIT))
            if adaptive else None,
            perturbation=str(config_get(config, "attack_args.attack_params.perturbation", DEFAULT_PERTURBATION))
            if adaptive else None,
        )
    except (TypeError, ValueError) as exc:
        raise DamagedRunFile(f"{config_path}: {exc}") from None


def _heterogeneity(config: Mapping[str, Any]) -> Optional[float]:
    """The partition's Dirichlet q: ``partition_alpha`` for ``hetero``, ``math.inf`` for ``homo`` (IID,
    the limit q → ∞), None for ``natural`` (or no partition in the config)."""
    method = config_get(config, "data_args.partition_method")
    if method == "homo":
        return math.inf
    alpha = config_get(config, "data_args.partition_alpha")
    return float(alpha) if method == "hetero" and alpha is not None else None


def q_label(q: float) -> str:
    """``q=0.2``, or ``IID`` for q = ∞."""
    return "IID" if math.isinf(q) else f"q={q:g}"


def swept(runs: Iterable[Run]) -> List[str]:
    """The :data:`SWEEPS` and :data:`LABEL_SWEEPS` values that differ between the runs (set on at least two
    distinct values)."""
    runs = list(runs)
    return [p for p in (*SWEEPS, *LABEL_SWEEPS) if len({getattr(r, p) for r in runs if getattr(r, p) is not None}) > 1]


def _pool_capped_samples(runs: List[Run]) -> None:
    """Give the runs of one workload under one ``max_samples_per_client`` cap their mean number of
    samples per client: each seed's partition realises a slightly different mean under the same cap
    (192.17 at one seed, 193.4 at another), which is one setting — one table row, one sweep point."""
    capped: Dict[Tuple[str, Any], List[Run]] = defaultdict(list)
    for run in runs:
        cap = config_get(run.config, "data_args.max_samples_per_client")
        if cap is not None and run.samples is not None:
            capped[(run.workload, cap)].append(run)
    for same in capped.values():
        pooled = mean_of(r.samples for r in same)
        for run in same:
            run.samples = pooled


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


def parse_seeds(text: str) -> Tuple[int, ...]:
    """The seeds ``text`` names: ``"0"``, ``"0,2"`` or ``"0-2"`` (a range, both ends in), or a mix
    (``"0,3-4"``); ValueError naming the text otherwise."""
    seeds: List[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            first, last = 0, -1
        if not low.strip() or last < first or first < 0:
            raise ValueError(f"seeds {text!r}: expected seed numbers as 0, 0,2 or 0-2 (non-negative, low-high)")
        seeds += range(first, last + 1)
    return tuple(sorted(set(seeds)))


def load_runs(results: Path, seeds: Optional[AbstractSet[int]] = None) -> List[Run]:
    """Every finished run under ``results`` (only those of ``seeds`` where given), with its table labels
    (:func:`labels`, from the runs kept); a damaged run is skipped with a warning naming its file."""
    runs = []
    for path in sorted(results.glob("*/summary.json")):
        try:
            run = read_run(path.parent)
        except DamagedRunFile as exc:
            log.warning("skipping a damaged run: %s", exc)
            continue
        if run is not None and (seeds is None or run.seed in seeds):
            runs.append(run)
    _pool_capped_samples(runs)
    sweeps = swept(runs)
    for run in runs:
        run.row, run.column = labels(run, sweeps)
    return runs


def finished_runs(results: Path, seeds: Optional[AbstractSet[int]] = None) -> List[Run]:
    """:func:`load_runs`; ValueError when ``results`` holds no finished run (of ``seeds``, naming the
    seeds it has)."""
    runs = load_runs(results, seeds)
    if runs:
        return runs
    if seeds is not None:
        present = sorted({r.seed for r in load_runs(results)} - {None})
        raise ValueError(f"no finished runs of seeds {', '.join(map(str, sorted(seeds)))} under {results}; "
                         f"its runs have seeds {', '.join(map(str, present)) or 'none'}")
    raise ValueError(f"no finished runs under {results} (a run folder holds summary.json with finished: true)")


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
    """The runs' row labels in table order (:func:`_defense_rank`)."""
    return _ordered(runs, lambda r: _defense_rank(r, ablation), "row")


def columns_of(runs: Iterable[Run]) -> List[str]:
    """The runs' column labels in table order (:data:`ATTACK_ORDER`, then the attackers' share)."""
    return _ordered(runs, _attack_rank, "column")


def workloads_of(runs: Iterable[Run]) -> List[str]:
    """The runs' workloads (``dataset/model``), sorted."""
    return sorted({r.workload for r in runs})


def step_rates(row: Mapping[str, str], step: str) -> float:
    """The share of the round's f attackers that ``step`` removed.

    f is not a column, but ``removal_success_rate`` = ``removed_malicious`` / f, so the share is
    ``removed_malicious_<step>`` / ``removed_malicious`` × ``removal_success_rate`` (0 when the round
    removed no attacker, NaN when it had none)."""
    rsr = to_float(row.get("removal_success_rate"))
    removed = to_float(row.get("removed_malicious"))
    by_step = to_float(row.get(f"removed_malicious_{step}"))
    if math.isnan(rsr) or math.isnan(by_step):
        return math.nan
    return by_step / removed * rsr if removed > 0 else 0.0
