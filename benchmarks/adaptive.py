"""Adaptive-attack benchmark (issue: cheap oracle): the attack's wall time with the plain-call oracle
against the fast oracle, for every rule, and a CNN round with the adaptive attack against the same
round without attack.

Part 1 — the attack alone. ``n`` updates of FedML's CNN_DropOut with the watermark output (28×28
inputs, 10 + 1 classes: d = 1,199,883), ``f`` of them attackers, synthetic but heterogeneous (a shared
direction, a Dirichlet mixture of class directions and noise, ~1e-3 per coordinate, as
``benchmarks/aggregation.py``). The rules that evaluate models (HeteroFL step 3, Zeno) evaluate the
real CNN on 4 trigger samples / a 32-sample validation batch of Fashion-MNIST-shaped inputs. For each
rule ``Adaptive(oracle="plain")`` and ``Adaptive(oracle="fast")`` attack the same round (full
knowledge, γ_init = 10, τ = 1e-5: about 20 tested γ); both must find the same γ (printed), and the
ratio plain/fast is the speed-up. Median's and trimmed mean's fast paths merge sorted columns
(``defense/columns.py``), centered clipping's iterates on the Gram matrix; a rule without a fast path
(Bulyan's aggregate) uses the plain call either way (ratio ≈ 1 by construction).

Part 2 — whole rounds (``--rounds``): the standalone simulator on real Fashion-MNIST / CNN at
issue 14's realistic size (100 clients, ``--samples`` per client, all taking part), one round with the
adaptive attack and one without, for HeteroFL and Zeno; a round is ``time_train + time_server`` of
``metrics.csv`` (local training, poisoning, defense). Target: adaptive round ≤ 2× the round without.

Part 1 also times ``adaptive_deviation`` (issue 25: Eq. (7) searched with the fast oracle, ~250 oracle
evaluations) on the same round, beside the paper's attack with the fast oracle (its peer in the same
run); ``--skip-plain`` leaves out the plain-call timing of the paper's attack. Part 2 times whole
rounds with ``adaptive_deviation`` too, for ``--round-rules``: target (issue 25) attack time ≤ 3× the
round's client training time.

``--quick``: a small model and n (a smoke run for CI; its numbers mean nothing).

Usage: ``python benchmarks/adaptive.py [--n 100] [--f 20] [--rules ...] [--rounds] [--round-rules ...]
[--samples 200] [--threads 2] [--skip-plain] [--quick] [--params RULE=JSON ...]``
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aggregation import _updates  # noqa: E402  (benchmarks/ is not a package)

log = logging.getLogger("benchmarks.adaptive")


def attack_cell(rule: str, n: int, f: int, quick: bool, skip_plain: bool = False,
                rule_params: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """Time the adaptive attack against ``rule`` (with ``rule_params``, else its f where it takes one)
    with both oracles (``skip_plain``: the fast one only) and ``adaptive_deviation`` on one round."""
    from fedml_heterofl.attack import build_attack
    from fedml_heterofl.defense import RoundContext, build_defense
    from fedml_heterofl.models import ParamLayout, batched_loss, build_model

    torch.manual_seed(0)  # the model's initialisation: every cell attacks the same round
    model = build_model("lr" if quick else "cnn", num_classes=10, watermark=True)
    layout = ParamLayout(model)
    g = torch.Generator().manual_seed(1)
    shape = (784,) if quick else (1, 28, 28)
    trigger = (torch.rand(4, *shape, generator=g), torch.full((4,), 10))
    validation = (torch.rand(32, *shape, generator=g), torch.randint(0, 10, (32,), generator=g))
    params = {"multikrum": {"f": f}, "dnc": {"f": f}, "zeno": {"b": f}, "trimmed_mean": {"f": f}, "bulyan": {"f": f}}
    if rule_params is not None:
        params[rule] = rule_params
    U = _updates(n, layout.d)
    ctx = RoundContext(global_params=layout.flatten(model), generator=torch.Generator().manual_seed(2),
                       client_ids=torch.arange(n), sample_counts=torch.randint(50, 500, (n,), generator=g).float(),
                       loss_fn=lambda p, b: batched_loss(model, layout, p, b), trigger_set=trigger,
                       validation_batch=validation, server_update=1e-3 * torch.randn(layout.d, generator=g))
    row: Dict[str, object] = {"rule": rule, "n": n, "f": f, "d": layout.d}
    for oracle in ("fast",) if skip_plain else ("plain", "fast"):
        attack = build_attack("adaptive", oracle=oracle)
        start = time.perf_counter()
        out = attack.attack(U[:n - f], U[n - f:], ctx, defense=build_defense(rule, **params.get(rule, {})))
        row[f"{oracle}_s"] = time.perf_counter() - start
        row[f"{oracle}_gamma"] = attack.report["gamma"]
        row["calls"] = attack.report["oracle_calls"]
        row[f"{oracle}_out"] = out
    row["same_updates"] = bool(torch.equal(row.pop("plain_out", row["fast_out"]), row.pop("fast_out")))
    attack = build_attack("adaptive_deviation")
    start = time.perf_counter()
    attack.attack(U[:n - f], U[n - f:], ctx, defense=build_defense(rule, **params.get(rule, {})))
    row["deviation_s"] = time.perf_counter() - start
    row.update(deviation_calls=attack.report["oracle_calls"], deviation_choice=attack.report["direction"],
               deviation_poisoned=attack.report["poisoned"])
    return row


def round_cell(rule: str, attack: Optional[str], samples: int, quick: bool, workdir: str,
               rule_params: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """One standalone round on Fashion-MNIST/CNN (``--quick``: MNIST/LR) and its time split (the rule's
    ``defense_params``: ``rule_params``, else Zeno's b = 20 and the defaults)."""
    from fedml_heterofl.settings import load_settings, settings_from_dict
    from fedml_heterofl.simulation.runner import Simulation

    base = load_settings("config/mnist_lr.yaml" if quick else "config/fashion_mnist_cnn.yaml").to_dict()
    base["data_args"]["max_samples_per_client"] = samples
    base["train_args"].update(comm_round=1)
    base["common_args"].update(run_name=f"{rule}_{attack or 'none'}", results_dir=workdir)
    if rule_params is None:
        rule_params = {"b": 20} if rule == "zeno" else {}
    base["defense_args"].update(enable_defense=True, defense_type=rule, defense_params=rule_params)
    base["attack_args"].update(enable_attack=attack is not None, attack_type=attack or "min_max",
                               attack_params={})
    sim = Simulation(settings_from_dict(base))
    sim.run(progress=False)
    row = _last_row(sim.store.path)
    return {"rule": rule, "attack": attack or "none", "train_s": float(row["time_train"]),
            "attack_s": float(row["time_attack"]), "server_s": float(row["time_server"]),
            "round_s": float(row["time_train"]) + float(row["time_server"]),
            "oracle_agrees": row.get("oracle_agrees", ""), "deviation_agrees": row.get("deviation_agrees", "")}


def _last_row(path) -> Dict[str, str]:
    import csv

    with open(path / "metrics.csv") as fh:
        return list(csv.DictReader(fh))[-1]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--f", type=int, default=20)
    p.add_argument("--rules", nargs="+", default=None, help="default: every registered rule")
    p.add_argument("--rounds", action="store_true", help="also time whole CNN rounds (part 2)")
    p.add_argument("--round-rules", nargs="+", default=["heterofl", "zeno"], help="part 2: the rules")
    p.add_argument("--skip-plain", action="store_true", help="part 1: leave out the plain-call oracle")
    p.add_argument("--samples", type=int, default=200, help="part 2: samples per client")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small model and n: a smoke run")
    p.add_argument("--params", action="append", default=[], metavar="RULE=JSON",
                   help="a rule's defense_params in both parts, e.g. 'fedml:trimmed_mean={\"beta\": 0.1}' "
                        "(repeatable; FedML's rules with required parameters need it)")
    args = p.parse_args(argv)
    rule_params: Dict[str, Dict[str, object]] = {}
    for item in args.params:
        rule, sep, text = item.partition("=")
        try:
            rule_params[rule] = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            p.error(f"--params {item!r}: {exc}")
        if not sep or not isinstance(rule_params[rule], dict):
            p.error(f"--params {item!r}: expected RULE={{\"name\": value, ...}}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from fedml_heterofl.defense import REGISTRY

    n, f = (20, 4) if args.quick else (args.n, args.f)
    rules = args.rules or sorted(REGISTRY)
    rows = []
    for rule in rules:
        rows.append(attack_cell(rule, n, f, args.quick, args.skip_plain, rule_params.get(rule)))
        r = rows[-1]
        print(f"{rule:>10}: plain {r.get('plain_s', math.nan):8.2f} s  fast {r['fast_s']:7.2f} s  "
              f"gamma {r['fast_gamma']:.5f} ({r['calls']} calls)  adaptive_deviation {r['deviation_s']:7.2f} s "
              f"({r['deviation_calls']} calls)", flush=True)
    print()
    print(f"Adaptive attacks, n = {n}, f = {f}, d = {rows[0]['d']:,} ({'LR, --quick' if args.quick else 'CNN'}), "
          f"{args.threads} threads")
    print()
    print("| rule | plain-call oracle s | fast oracle s | speed-up | γ plain / fast | same poisoned updates | "
          "adaptive_deviation s (calls) | / adaptive fast | its choice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        plain = f"{r['plain_s']:.2f} | {r['fast_s']:.2f} | {r['plain_s'] / r['fast_s']:.1f}× | " \
                f"{r['plain_gamma']:.5f} / {r['fast_gamma']:.5f}" if "plain_s" in r else \
                f"— | {r['fast_s']:.2f} | — | — / {r['fast_gamma']:.5f}"
        print(f"| {r['rule']} | {plain} | {'yes' if r['same_updates'] else 'NO'} | {r['deviation_s']:.2f} "
              f"({r['deviation_calls']}) | {r['deviation_s'] / r['fast_s']:.1f}× | {r['deviation_choice']}, "
              f"{r['deviation_poisoned']} poisoned |")
    if args.rounds:
        round_table(args.round_rules, args.samples, args.quick, args.threads, rule_params)
    return 0


def round_table(rules: List[str], samples: int, quick: bool, threads: int,
                rule_params: Dict[str, Dict[str, object]]) -> None:
    """Part 2: whole rounds without attack, with ``adaptive`` and with ``adaptive_deviation``."""
    attacks = (None, "adaptive", "adaptive_deviation")
    with tempfile.TemporaryDirectory() as workdir:
        cells = [round_cell(rule, attack, samples, quick, workdir, rule_params.get(rule))
                 for rule in rules for attack in attacks]
    print()
    data = "MNIST/LR" if quick else "Fashion-MNIST/CNN"
    print(f"Rounds: {data}, 100 clients x {samples} samples, all taking part, {threads} threads")
    print()
    print("| rule | round without attack s | adaptive round s (attack s) | ratio | adaptive_deviation round s "
          "(attack s) | ratio | its attack / its training (target ≤ 3) | oracle / deviation agree |")
    print("|---|---|---|---|---|---|---|---|")
    for none, adaptive, deviation in zip(cells[::3], cells[1::3], cells[2::3]):
        print(f"| {none['rule']} | {none['round_s']:.1f} | {adaptive['round_s']:.1f} ({adaptive['attack_s']:.1f}) | "
              f"{adaptive['round_s'] / none['round_s']:.2f}× | {deviation['round_s']:.1f} ({deviation['attack_s']:.1f}) | "
              f"{deviation['round_s'] / none['round_s']:.2f}× | {deviation['attack_s'] / deviation['train_s']:.2f} | "
              f"{deviation['oracle_agrees']} / {deviation['deviation_agrees']} |")


if __name__ == "__main__":
    sys.exit(main())
