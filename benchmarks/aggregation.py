"""Aggregation benchmark (DESIGN §10): every rule of ours against FedML 0.9.6's Krum on the same updates.

Stacked float32 updates of ResNet20 size (the watermark model, 10 + 1 outputs: d = 272,539) for
n = 100 and n = 1000 on CPU. Each (rule, n) cell runs in its own subprocess so that its peak RSS
is its own; "extra memory" is the peak RSS during aggregation minus the peak RSS once the updates
exist, printed as a multiple of the stacked updates' size. Times (total and per step) are medians over
``--repeats`` runs after one warm-up run. FedML's Krum loops over all n(n-1) pairs in Python; at n = 1000 that
takes minutes, so by default it is timed on ``--krum-rows`` of the n rows and scaled by n/rows
(its cost is the same for every row), and the table says so; ``--krum-full`` times all rows.

Usage: ``python benchmarks/aggregation.py [--n 100 1000] [--repeats 3] [--threads 2]``
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from statistics import median
from typing import Dict, List, Optional

import torch

log = logging.getLogger("benchmarks.aggregation")

F_FRACTION = 0.2  # attackers per client, the paper's 20 %


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_and_loss():
    """ResNet20 with the watermark output and a batched loss over flat parameter vectors."""
    from fedml_heterofl.models import ParamLayout, batched_loss, build_model

    model = build_model("resnet20", num_classes=10, watermark=True)
    layout = ParamLayout(model)
    return model, layout, (lambda p, b: batched_loss(model, layout, p, b))


def _updates(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Heterogeneous-looking updates: a shared direction, a per-client mixture of 10 class
    directions and noise, about 1e-3 per coordinate like a local SGD delta."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g)
    classes = torch.randn(10, d, generator=g)
    mix = torch.distributions.Dirichlet(torch.full((10,), 0.2)).sample((n,))
    U.addmm_(mix, classes)
    U.add_(torch.randn(d, generator=g), alpha=0.5)
    return U.mul_(1e-3)


def _ours(rule: str, n: int):
    """(callable(U), label) for one of our rules with a context that gives it what it needs."""
    from fedml_heterofl.defense import RoundContext, build_defense

    model, layout, loss_fn = _model_and_loss()
    w_t = layout.flatten(model)
    g = torch.Generator().manual_seed(1)
    trigger = (torch.rand(4, 3, 32, 32, generator=g), torch.full((4,), 10))
    val = (torch.rand(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))
    f = int(F_FRACTION * n)
    params: Dict[str, Dict[str, object]] = {
        "heterofl": {}, "heterofl_124": {"steps": (1, 2, 4)}, "multikrum": {"f": f}, "zeno": {"b": f},
        "dnc": {"f": f},
    }
    name = "heterofl" if rule.startswith("heterofl") else rule
    defense = build_defense(name, **params.get(rule, {}))
    ctx = RoundContext(global_params=w_t, loss_fn=loss_fn, trigger_set=trigger, validation_batch=val,
                       server_update=1e-3 * torch.randn(layout.d, generator=g),
                       sample_counts=torch.randint(50, 500, (n,), generator=g).float())
    return (lambda U: defense(U, ctx)), layout.d


def _fedml_krum(n: int, d: int, rows: Optional[int]):
    """FedML 0.9.6's KrumDefense (multi-Krum, m = n - 2f - 2) on state dicts viewing the same updates."""
    from types import SimpleNamespace

    from fedml.core.security.defense.krum_defense import KrumDefense
    from fedml_heterofl.models import ParamLayout, build_model

    layout = ParamLayout(build_model("resnet20", num_classes=10, watermark=True))
    f = int(F_FRACTION * n)
    krum = KrumDefense(SimpleNamespace(byzantine_client_num=f, krum_param_m=n - 2 * f - 2))

    def run(U: torch.Tensor):
        raw = [(1.0, OrderedDict(layout.unflatten(U[i]))) for i in range(n)]
        if rows is None:
            return krum.defend_before_aggregation(raw)
        # the same per-row work as _compute_krum_score, for `rows` rows only
        from fedml.core.security.common import utils
        vecs = [utils.vectorize_weight(sd) for _, sd in raw]
        for i in range(rows):
            dists = sorted(utils.compute_euclidean_distance(vecs[i], vecs[j]).item() ** 2
                           for j in range(n) if j != i)
            sum(dists[: n - f - 2])
        return None

    return run, layout.d


def run_cell(rule: str, n: int, repeats: int, krum_rows: Optional[int]) -> Dict[str, object]:
    """Time one rule at one n in this process; returns seconds, per-step seconds and memory."""
    if rule == "fedml_krum":
        fn, d = _fedml_krum(n, 272_539, krum_rows)
    else:
        fn, d = _ours(rule, n)
    U = _updates(n, d)
    base_rss = _rss_mib()
    fn(U)  # warm-up: first-call costs (lazy imports, allocator growth) are not timed
    times: List[float] = []
    step_times: Dict[str, List[float]] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(U)
        times.append(time.perf_counter() - start)
        for k, v in getattr(result, "diagnostics", {}).items():
            if k.startswith("time_"):
                step_times.setdefault(k[5:], []).append(v)
    seconds = median(times)
    scale = 1.0
    if rule == "fedml_krum" and krum_rows is not None:
        scale = n / krum_rows
    steps = {k: median(v) for k, v in step_times.items()}
    return {
        "rule": rule, "n": n, "d": d, "seconds": seconds * scale, "estimated": scale != 1.0,
        "steps": steps, "extra_mib": _rss_mib() - base_rss, "updates_mib": U.numel() * 4 / 2**20,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--rules", nargs="+", default=None, help="default: every registered rule + fedml_krum")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--krum-rows", type=int, default=50, help="rows FedML's Krum is timed on when n > 100")
    p.add_argument("--krum-full", action="store_true", help="time FedML's Krum on all rows")
    p.add_argument("--one", nargs=2, metavar=("RULE", "N"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if args.one:
        rule, n = args.one[0], int(args.one[1])
        rows = None if (args.krum_full or n <= 100) else args.krum_rows
        print(json.dumps(run_cell(rule, n, args.repeats if n <= 100 else 1, rows)))
        return 0

    from fedml_heterofl.defense import REGISTRY

    rules = args.rules or ["heterofl_124", *sorted(REGISTRY), "fedml_krum"]
    rows = []
    for n in args.n:
        for rule in rules:
            cmd = [sys.executable, __file__, "--one", rule, str(n), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--krum-rows", str(args.krum_rows)]
            if args.krum_full:
                cmd.append("--krum-full")
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if out.returncode != 0:
                print(f"{rule} n={n}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(_format_row(rows[-1], rows), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print()
    print(markdown_table(rows))
    return 0


def _format_row(row: Dict[str, object], rows: List[Dict[str, object]]) -> str:
    return f"{row['rule']:>14} n={row['n']:<5} {row['seconds']:9.3f} s  extra {row['extra_mib']:8.1f} MiB"


def markdown_table(rows: List[Dict[str, object]]) -> str:
    """The README table: seconds, ratio to FedML's Krum at the same n, memory multiple, step times."""
    krum = {r["n"]: r["seconds"] for r in rows if r["rule"] == "fedml_krum"}
    lines = ["| rule | n | seconds | FedML Krum / rule | extra memory / updates | steps (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{krum[r['n']] / r['seconds']:.1f}x" if r["n"] in krum and r["rule"] != "fedml_krum" else "-"
        secs = f"{r['seconds']:.3f}" + (" (est.)" if r["estimated"] else "")
        steps = ", ".join(f"{k} {v:.3f}" for k, v in r["steps"].items())
        lines.append(f"| {r['rule']} | {r['n']} | {secs} | {ratio} | {r['extra_mib'] / r['updates_mib']:.2f}x | {steps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
