"""Table II of the paper (Lu, Hu et al., IEEE TIFS 2024): rounds and training seconds until the test
accuracy first reaches a target, the seconds as a multiple of FedAvg's, and the mean seconds per round;
for the paper's Table II target where the paper has the workload (its hours beside,
:func:`~fedml_heterofl.experiments.paper.paper_time`), and for :data:`TARGET_SHARE` of FedAvg's clean
accuracy (or ``--target``).

Time columns: ``time_server`` is measured around the whole server round (model poisoning, the
defense, FLTrust's server update) and so already holds ``time_attack`` and ``time_defend``; a round's
training time is ``time_train + time_server`` (evaluation, ``time_eval``, is not counted).
"""
from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Tuple

from fedml_heterofl.experiments.cells import csv_text, finite_values, md_table, mean_of, number_text, to_float
from fedml_heterofl.experiments.paper import TIME_COLUMN, paper_time
from fedml_heterofl.experiments.runs import Run, columns_of, group, rows_of, workloads_of

#: per-round columns that make up a round's training time (``time_server`` holds attack and defense)
TIME_COLUMNS = ("time_train", "time_server")
#: share of FedAvg's no-attack final accuracy used as the time-to-accuracy target
TARGET_SHARE = 0.95


def round_seconds(row: Mapping[str, str]) -> float:
    """A round's training time: the :data:`TIME_COLUMNS` it has (NaN when it has none)."""
    values = finite_values(to_float(row.get(c)) for c in TIME_COLUMNS)
    return sum(values) if values else math.nan


def time_to_accuracy(run: Run, target: float) -> Optional[Tuple[int, float]]:
    """``(rounds, seconds)`` up to the first evaluated round whose test accuracy is at least
    ``target``: rounds trained (the 0-based round index + 1) and the sum of :func:`round_seconds`
    over those rounds; None when the run never reaches the target."""
    seconds = 0.0
    for row in sorted(run.rows, key=lambda r: int(r["round"])):
        spent = round_seconds(row)
        seconds += 0.0 if math.isnan(spent) else spent
        if to_float(row.get("test_acc")) >= target:
            return int(row["round"]) + 1, seconds
    return None


def accuracy_target(runs: List[Run], workload: str, target: Optional[float]) -> Tuple[Optional[float], str]:
    """``(target, how it was set)``: ``target`` when given (``--target``, e.g. the paper's fixed 0.8),
    else :data:`TARGET_SHARE` of the mean final accuracy of the workload's FedAvg runs without attack,
    else None."""
    if target is not None:
        return target, "--target"
    baseline = mean_of(r.final_acc for r in runs if r.workload == workload and r.defense == "fedavg"
                       and r.attack == "none")
    if not math.isnan(baseline):
        return TARGET_SHARE * baseline, f"{TARGET_SHARE:.0%} of FedAvg without attack ({baseline:.4f})"
    return None, "no FedAvg run without attack and no --target"


def _times_to(runs: List[Run], goal: Optional[float]) -> Tuple[int, float, float]:
    """``(seeds reaching, mean rounds, mean seconds)`` to ``goal`` over ``runs`` (means over the seeds
    that reach it: NaN when none does or there is no goal)."""
    hits = [h for h in (time_to_accuracy(r, goal) for r in runs) if h] if goal is not None else []
    return len(hits), mean_of(h[0] for h in hits), mean_of(h[1] for h in hits)


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
                per_round = mean_of(mean_of(round_seconds(row) for row in r.rows) for r in rs)
                reached = "no target" if goal is None else (f"{hits}/{len(rs)}" if hits else "never")
                row = [d, a, reached, number_text(rounds, ".1f"), number_text(seconds, ".2f"),
                       _ratio(seconds, fedavg_seconds), number_text(per_round, ".3f")]
                if paper:
                    hours = paper_hours.get(d, math.nan) if a == "none" else math.nan
                    row.append("–" if math.isnan(hours) else
                               f"{hours:g} h ({_ratio(hours, paper_hours.get('fedavg', math.nan))})")
                md_rows.append(row)
                body.append([wl, d, a, goal if goal is not None else "", source, len(rs), hits, rounds, seconds,
                             per_round])
            md += [f"\n**{wl}** — time to accuracy; target {'–' if goal is None else f'{goal:.4f}'} ({source}); "
                   "seconds = time_train + time_server\n"]
            md += md_table(["defense", "attack", "seeds reaching", "rounds to target", "seconds to target",
                            "× FedAvg", "seconds / round"] + (["paper: hours (× FedAvg)"] if paper else []), md_rows)
    header = ["workload", "defense", "attack", "target", "target_source", "seeds", "seeds_reached",
              "rounds_to_target_mean", "seconds_to_target_mean", "seconds_per_round_mean"]
    return "\n".join(md) + "\n", csv_text(header, body)
