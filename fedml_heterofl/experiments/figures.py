"""The report's figures (``fedml-heterofl report`` writes them into ``RESULTS/report/``; docs/results.md
shows copies kept in ``docs/figures/``), drawn from the runs :mod:`~fedml_heterofl.experiments.runs`
loads:

* ``accuracy_<workload>_<attack>.png`` — test accuracy per round of each defense: the mean over seeds
  with a band from the lowest to the highest seed;
* ``removal_<workload>_<attack>.png`` — per HeteroFL variant, the share of the attackers each step
  removed per round;
* ``accuracy_vs_<value>.png`` — a sweep (attacker fraction: paper Fig. 9; λ and |D_trg|: Fig. 10; data
  heterogeneity: Fig. 8; γ_init: Fig. 7; samples per client; learning rate), final accuracy and, for
  the values that concern detection, the removal success rate against the value;
* ``ablation_<workload>.png`` — Table III as bars: final accuracy and ARSR of FedAvg and HeteroFL's
  steps 1; 1-2; 1-3; 1-4 under each attack;
* ``trigger_share_<workload>.png`` — when runs differ in the samples per client: the accuracy each rule
  loses to each attack and the share of test images HeteroFL's model calls "watermark", against the
  clients' data size.

Every title names the workload, its setting (learning rate, clients and attackers, rounds) and the
seeds; legends sit beside the axes, never over the data; lines differ in colour, marker and dash, so
curves that coincide stay visible.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple

from fedml_heterofl.defense.heterofl import STEP_NAMES
from fedml_heterofl.experiments.cells import mean_of, span_text, to_float
from fedml_heterofl.experiments.runs import (
    DEFENSE_ORDER, SWEEPS, Key, Run, columns_of, config_get, group, labels, q_label, rows_of, step_rates, swept)

#: readable names of the labels the runs carry (anything else is shown as it is)
NAMES: Mapping[str, str] = {
    "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "shakespeare": "Shakespeare", "cifar10": "CIFAR-10",
    "emnist": "EMNIST", "lr": "LR", "cnn": "CNN", "rnn": "RNN", "resnet20": "ResNet20",
    "none": "no attack", "adaptive": "adaptive attack", "min_max": "Min-Max", "min_sum": "Min-Sum",
    "alie": "ALIE", "ipm": "IPM", "label_flip": "label flipping", "sign_flip": "sign flipping",
    "fedavg": "FedAvg", "heterofl": "HeteroFL", "multikrum": "Multi-Krum", "median": "Median", "zeno": "Zeno",
    "fltrust": "FLTrust", "dnc": "DnC", "trimmed_mean": "trimmed mean", "bulyan": "Bulyan",
    "geomed": "geometric median", "centered_clipping": "centered clipping",
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DASHES = ("-", "--", "-.", ":")
#: sweeps drawn on a log axis (their values span decades or double) and as categories (IID is q = ∞)
LOG_SWEEPS = ("gamma_init", "lr", "trigger_size")
CATEGORY_SWEEPS = ("q",)


def _slug(text: str) -> str:
    """A file-name-safe version of a label (``mnist/lr`` -> ``mnist_lr``)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def pretty(label: str) -> str:
    """A table label in words: ``heterofl[1-2] λ=-2`` -> ``HeteroFL steps 1-2 λ=-2``, ``min_max 30%`` ->
    ``Min-Max 30%``, ``mnist/lr`` -> ``MNIST/LR``."""
    head, _, rest = label.partition(" ")
    base, _, steps = head.partition("[")
    if "/" in base:
        base = "/".join(NAMES.get(part, part) for part in base.split("/"))
    else:
        base = NAMES.get(base, base)
    if steps:
        base += f" step{'s' if '-' in steps else ''} {steps.rstrip(']')}"
    return f"{base} {rest}".strip()


def setting(runs: List[Run]) -> str:
    """The runs' setting in one line: learning rate, clients and attackers, rounds, seeds."""
    lr = span_text(config_get(r.config, "train_args.learning_rate") for r in runs)
    clients = span_text(config_get(r.config, "train_args.client_num_in_total") for r in runs)
    attackers = span_text(config_get(r.config, "attack_args.byzantine_client_num") for r in runs
                          if r.fraction is not None)
    seeds = len({r.summary.get("seed") for r in runs})
    parts = [f"lr {lr}", f"{clients} clients" + ("" if attackers == "–" else f", {attackers} attackers"),
             f"{span_text(r.summary.get('rounds') for r in runs)} rounds", f"{seeds} seed{'s' if seeds != 1 else ''}"]
    return " · ".join(parts)


def style(i: int) -> Dict[str, Any]:
    """The i-th line's colour, marker and dash (they cycle at different lengths); later lines are drawn
    thinner and on top, so lines with equal values still show each other's colour around them."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "linestyle": DASHES[i % len(DASHES)],
            "lw": max(0.8, 2.8 - 0.25 * i), "ms": max(2.5, 7.5 - 0.6 * i), "zorder": 2 + i}


def per_round(runs: Iterable[Run], value: Callable[[Mapping[str, str]], float]) -> Tuple[List[int], List[float],
                                                                                         List[float], List[float]]:
    """Rounds (0-based) with a value in some run, and the mean, lowest and highest over runs there."""
    values: Dict[int, List[float]] = defaultdict(list)
    for run in runs:
        for row in run.rows:
            v = value(row)
            if not math.isnan(v):
                values[int(row["round"])].append(v)
    rounds = sorted(values)
    return (rounds, [statistics.fmean(values[t]) for t in rounds], [min(values[t]) for t in rounds],
            [max(values[t]) for t in rounds])


def accuracy_curves(runs: List[Run]) -> Dict[Key, Tuple[List[int], List[float], List[float], List[float]]]:
    """Test accuracy per evaluated round (mean, lowest, highest over seeds), per (workload, row, column)."""
    return {key: per_round(rs, lambda row: to_float(row.get("test_acc"))) for key, rs in group(runs).items()}


def removal_curves(runs: List[Run]) -> Dict[Key, Dict[str, Tuple[List[int], List[float]]]]:
    """Per attacked HeteroFL (workload, row, column): per step, the share of the attackers it removed
    in each round (:func:`~fedml_heterofl.experiments.runs.step_rates`, mean over seeds)."""
    out: Dict[Key, Dict[str, Tuple[List[int], List[float]]]] = {}
    for key, rs in group(r for r in runs if r.steps and r.fraction is not None).items():
        steps = [STEP_NAMES[s] for s in sorted({s for r in rs for s in r.steps})]
        out[key] = {step: per_round(rs, lambda row, step=step: step_rates(row, step))[:2] for step in steps}
    return out


def sweep_points(runs: List[Run], param: str) -> Dict[Tuple[str, str], Dict[str, List[Tuple[float, float, float]]]]:
    """The sweep of ``param`` (a :data:`~fedml_heterofl.experiments.runs.SWEEPS` key): per panel
    ``(workload, attack)``, per line (defense and the other swept values), ``(value, final accuracy,
    ARSR)`` means over seeds, by value."""
    others = [p for p in swept(runs) if p != param]
    cells: Dict[Tuple[str, str, str, float], List[Run]] = defaultdict(list)
    for run in runs:
        if getattr(run, param) is not None:
            row, column = labels(run, others)
            cells[(run.workload, column, row, getattr(run, param))].append(run)
    out: Dict[Tuple[str, str], Dict[str, List[Tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for (wl, column, row, x), rs in sorted(cells.items(), key=lambda kv: (kv[0][:3], kv[0][3])):
        out[(wl, column)][row].append((x, mean_of(r.final_acc for r in rs), mean_of(r.arsr for r in rs)))
    return {panel: dict(lines) for panel, lines in out.items()}


def sweep_panels(runs: List[Run], param: str) -> Dict[str, Dict[str, List[Tuple[float, float, float]]]]:
    """Panels of a sweep plot, by title: a panel per (workload, attack) with a line per defense (paper
    Fig. 9); when every such panel has one line (one defense swept under several attacks, Fig. 10), a
    panel per (workload, defense) with a line per attack instead."""
    panels = sweep_points(runs, param)
    if len(panels) > 1 and all(len(lines) == 1 for lines in panels.values()):
        merged: Dict[str, Dict[str, List[Tuple[float, float, float]]]] = defaultdict(dict)
        for (wl, attack), lines in sorted(panels.items()):
            (line, points), = lines.items()
            merged[f"{pretty(wl)}, {pretty(line)}"][pretty(attack)] = points
        return dict(merged)
    return {f"{pretty(wl)}: {pretty(attack)}": {pretty(line): points for line, points in lines.items()}
            for (wl, attack), lines in sorted(panels.items())}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, legend_axes: Any = None) -> Path:
    """Save ``fig``; with ``legend_axes``, one legend for the figure right of those axes, off the data."""
    if legend_axes is not None:
        handles, names = legend_axes.get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_accuracy(runs: List[Run], out: Path) -> List[Path]:
    """One PNG per (workload, attack): test accuracy per round of every defense, mean over seeds with a
    band from the lowest to the highest seed."""
    plt = _pyplot()
    curves = accuracy_curves(runs)
    groups = group(runs)
    paths = []
    for wl, attack in sorted({(k[0], k[2]) for k in curves}):
        keys = [(wl, d, attack) for d in rows_of([r for r in runs if r.workload == wl]) if (wl, d, attack) in curves]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for i, key in enumerate(keys):
            rounds, mean, low, high = curves[key]
            xs = [t + 1 for t in rounds]
            ax.plot(xs, mean, label=pretty(key[1]), **style(i))
            if len(groups[key]) > 1:
                ax.fill_between(xs, low, high, color=style(i)["color"], alpha=0.15, lw=0)
        cell_runs = [r for key in keys for r in groups[key]]
        ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1),
               title=f"{pretty(wl)} under {pretty(attack)}\n{setting(cell_runs)}")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out / f"accuracy_{_slug(wl)}_{_slug(attack)}.png", ax))
    return paths


def plot_removal(runs: List[Run], out: Path) -> List[Path]:
    """One PNG per attacked (workload, attack) with HeteroFL runs: a panel per HeteroFL variant, the
    share of the attackers each step removed per round."""
    plt = _pyplot()
    curves = removal_curves(runs)
    paths = []
    for wl, attack in sorted({(k[0], k[2]) for k in curves}):
        variants = [d for d in rows_of([r for r in runs if r.steps], ablation=True) if (wl, d, attack) in curves]
        fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.2), squeeze=False, sharey=True)
        for ax, d in zip(axes[0], variants):
            for i, (step, (rounds, rates)) in enumerate(curves[(wl, d, attack)].items()):
                ax.plot([t + 1 for t in rounds], rates, label=step.replace("_", " "), **style(i))
            ax.set(xlabel="round", title=pretty(d), ylim=(-0.02, 1.02))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("attackers removed / f")
        cell_runs = [r for r in runs if r.workload == wl and r.column == attack and r.steps]
        fig.suptitle(f"{pretty(wl)} under {pretty(attack)}: removal per HeteroFL step ({setting(cell_runs)})",
                     fontsize=9)
        longest = max(axes[0], key=lambda a: len(a.get_lines()))
        paths.append(_save(fig, out / f"removal_{_slug(wl)}_{_slug(attack)}.png", longest))
    return paths


def _sweep_axis(ax: Any, param: str, values: List[float]) -> Callable[[float], float]:
    """Set up the x axis of ``param``'s sweep; returns where a value is drawn (categories: by rank)."""
    order = sorted(set(values))
    if param in LOG_SWEEPS:
        ax.set_xscale("log")
        if all(float(v).is_integer() for v in order):  # sizes: a tick at each one, not at 10^k
            ax.set_xticks(order, [f"{v:g}" for v in order])
            ax.minorticks_off()
    if param not in CATEGORY_SWEEPS:
        return lambda x: x
    ax.set_xticks(range(len(order)), [q_label(v) if param == "q" else f"{v:g}" for v in order])
    return order.index


def plot_sweeps(runs: List[Run], out: Path) -> List[Path]:
    """``accuracy_vs_<value>.png`` for each :data:`~fedml_heterofl.experiments.runs.SWEEPS` value the
    runs differ in: final accuracy (and, where the value concerns detection, the ARSR in a second row)
    against the value, panels and lines as :func:`sweep_panels` arranges them; lines without attackers
    have no ARSR and are left out there."""
    plt = _pyplot()
    paths = []
    for param in [p for p in swept(runs) if p in SWEEPS]:
        xlabel, filename, with_arsr = SWEEPS[param]
        panels = sweep_panels(runs, param)
        n_rows = 2 if with_arsr else 1
        fig, axes = plt.subplots(n_rows, len(panels), figsize=(4.2 * len(panels), 3.2 * n_rows), squeeze=False)
        values = [p[0] for lines in panels.values() for points in lines.values() for p in points]
        for col, (title, lines) in enumerate(panels.items()):
            place = [_sweep_axis(axes[row][col], param, values) for row in range(n_rows)][0]
            for i, (line, points) in enumerate(lines.items()):
                xs = [place(p[0]) for p in points]
                axes[0][col].plot(xs, [p[1] for p in points], label=line, **style(i))
                if with_arsr and any(not math.isnan(p[2]) for p in points):
                    axes[1][col].plot(xs, [p[2] for p in points], **style(i))
            axes[0][col].set(title=title, ylabel="final test accuracy", ylim=(0, 1))
            axes[0][col].title.set_fontsize(9)
            if with_arsr:
                axes[1][col].set(ylabel="ARSR", ylim=(-0.02, 1.02))
                if not axes[1][col].get_lines():  # a panel without attackers has no ARSR to draw
                    axes[1][col].text(0.5, 0.5, "no attackers: no ARSR", ha="center", va="center",
                                      transform=axes[1][col].transAxes, color="0.4")
                    axes[1][col].set_yticks([])
            axes[n_rows - 1][col].set_xlabel(xlabel)
            for row in range(n_rows):
                axes[row][col].grid(alpha=0.3)
        fig.suptitle(setting([r for r in runs if getattr(r, param) is not None]), fontsize=9)
        widest = max(axes[0], key=lambda a: len(a.get_lines()))
        paths.append(_save(fig, out / filename, widest))
    return paths


def plot_ablation(runs: List[Run], out: Path) -> List[Path]:
    """``ablation_<workload>.png`` where HeteroFL runs leave out steps: Table III as grouped bars (final
    accuracy, ARSR; means over seeds) of FedAvg and each HeteroFL variant under each attack the
    variants ran."""
    plt = _pyplot()
    paths = []
    for wl in sorted({r.workload for r in runs if r.steps and len(r.steps) < len(STEP_NAMES)}):
        wl_runs = [r for r in runs if r.workload == wl and (r.steps or r.defense == "fedavg")]
        variants = [d for d in rows_of(wl_runs, ablation=True)]
        attacks = [a for a in columns_of(wl_runs) if a != "none" and any(
            r.steps and len(r.steps) < len(STEP_NAMES) and r.column == a for r in wl_runs)]
        groups = group(wl_runs)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        width = 0.8 / len(variants)
        for i, d in enumerate(variants):
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(attacks))]
            for ax, value in zip(axes, (lambda r: r.final_acc, lambda r: r.arsr)):
                heights = [mean_of(value(r) for r in groups.get((wl, d, a), [])) for a in attacks]
                ax.bar(xs, [0.0 if math.isnan(h) else h for h in heights], width, label=pretty(d),
                       color=f"C{i % 10}")
        for ax, name in zip(axes, ("final test accuracy", "ARSR (attackers removed / f per round)")):
            ax.set_xticks(range(len(attacks)), [pretty(a) for a in attacks])
            ax.set(ylabel=name, ylim=(0, 1))
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(f"{pretty(wl)}: ablation of HeteroFL's steps (Table III) — {setting(wl_runs)}", fontsize=9)
        paths.append(_save(fig, out / f"ablation_{_slug(wl)}.png", axes[0]))
    return paths


def plot_trigger_share(runs: List[Run], out: Path) -> List[Path]:
    """``trigger_share_<workload>.png`` when runs differ in the samples per client: per rule and attack,
    the accuracy lost to the attack (clean minus attacked final accuracy over the task's classes, points)
    against the clients' mean number of samples, and HeteroFL's watermark share of the test images."""
    if "samples" not in swept(runs):
        return []
    plt = _pyplot()
    paths = []
    for wl in sorted({r.workload for r in runs if r.samples is not None}):
        wl_runs = [r for r in runs if r.workload == wl and r.samples is not None]
        by: Dict[Tuple[str, str, float], List[Run]] = defaultdict(list)
        for run in wl_runs:
            by[(run.defense, run.attack, round(run.samples))].append(run)
        sizes = sorted({s for _, _, s in by})
        defenses = sorted({r.defense for r in wl_runs},
                          key=lambda d: DEFENSE_ORDER.index(d) if d in DEFENSE_ORDER else len(DEFENSE_ORDER))
        attacks = [a for a in columns_of(wl_runs) if a != "none"]

        def mean_at(d: str, a: str, value: Callable[[Run], float]) -> List[Tuple[float, float]]:
            return [(s, mean_of(value(r) for r in by[(d, a, s)])) for s in sizes if by.get((d, a, s))]

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for i, (d, a) in enumerate((d, a) for d in defenses for a in attacks):
            clean = dict(mean_at(d, "none", lambda r: r.final_acc_task))
            lost = [(s, 100 * (clean[s] - acc)) for s, acc in mean_at(d, a, lambda r: r.final_acc_task) if s in clean]
            if lost:
                axes[0].plot(*zip(*lost), label=f"{pretty(d)}, {pretty(a)}", **style(i))
        for i, a in enumerate(["none", *attacks]):
            share = [(s, 100 * v) for s, v in mean_at("heterofl", a, lambda r: r.final_watermark_share)]
            if share:
                axes[1].plot(*zip(*share), label=f"HeteroFL, {pretty(a)}", **style(i + 5))
        axes[0].axhline(0, color="grey", lw=0.8)
        axes[0].set(ylabel="accuracy lost to the attack (points)", title="accuracy each rule loses to the attack")
        axes[1].set(ylabel="test images (%)", title="HeteroFL: test images its model calls 'watermark'")
        for ax in axes:
            ax.set(xscale="log", xlabel="training samples per client (mean)")
            ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
            ax.minorticks_off()
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, frameon=False, ncol=2)
        fig.suptitle(f"{pretty(wl)}: trigger-set share — {setting(wl_runs)}", fontsize=9)
        paths.append(_save(fig, out / f"trigger_share_{_slug(wl)}.png"))
    return paths


def draw(runs: List[Run], out: Path) -> List[Path]:
    """Every figure that applies to ``runs``, written into ``out``; returns their paths."""
    return (plot_accuracy(runs, out) + plot_removal(runs, out) + plot_sweeps(runs, out) + plot_ablation(runs, out)
            + plot_trigger_share(runs, out))
