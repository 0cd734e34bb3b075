"""Aggregation benchmark: every rule of ours against FedML 0.9.6's Krum on the same updates,
and each of our rules that FedML also implements against FedML's implementation (:data:`PEERS`).

Stacked float32 updates of ResNet20 size (the watermark model, 10 + 1 outputs: d = 272,539) for
n = 100 and n = 1000 on CPU. Each (rule, n) cell runs in its own subprocess so that its peak RSS
is its own; "extra memory" is the peak RSS during aggregation minus the peak RSS once the updates
exist, printed as a multiple of the stacked updates' size. Times (total and per step) are medians over
``--repeats`` runs after one warm-up run. FedML's Krum loops over all n(n-1) pairs in Python; at n = 1000 that
takes minutes, so by default it is timed on ``--krum-rows`` of the n rows and scaled by n/rows
(its cost is the same for every row), and the table says so; ``--krum-full`` times all rows.

FedML's Bulyan, RFA, CClip and trimmed mean are timed at n <= 100 only unless ``--fedml-full``.
``--quick``: LR-sized updates, n = 20, one repeat (a smoke run; its numbers mean nothing).

Usage: ``python benchmarks/aggregation.py [--n 100 1000] [--repeats 3] [--threads 2] [--quick]``
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

import numpy as np
import torch

log = logging.getLogger("benchmarks.aggregation")

F_FRACTION = 0.2  # attackers per client, the paper's 20 %


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_and_loss(quick: bool = False):
    """ResNet20 (``quick``: LR on MNIST) with the watermark output and a batched loss over flat parameter vectors."""
    from fedml_heterofl.models import ParamLayout, batched_loss, build_model

    model = build_model("lr" if quick else "resnet20", num_classes=10, watermark=True)
    layout = ParamLayout(model)
    return model, layout, (lambda p, b: batched_loss(model, layout, p, b))


def _updates(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Heterogeneous-looking updates: a shared direction, a per-client mixture of 10 class
    directions and noise, about 1e-3 per coordinate like a local SGD delta."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g)
    classes = torch.randn(10, d, generator=g)
    mix = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(10, 0.2), size=n)).float()
    U.addmm_(mix, classes)
    U.add_(torch.randn(d, generator=g), alpha=0.5)
    return U.mul_(1e-3)


def _ours(rule: str, n: int, quick: bool = False):
    """(callable(U), d) for one of our rules with a context that gives it what it needs."""
    from fedml_heterofl.defense import RoundContext, build_defense

    model, layout, loss_fn = _model_and_loss(quick)
    w_t = layout.flatten(model)
    g = torch.Generator().manual_seed(1)
    shape = (784,) if quick else (3, 32, 32)
    trigger = (torch.rand(4, *shape, generator=g), torch.full((4,), 10))
    val = (torch.rand(4, *shape, generator=g), torch.randint(0, 10, (4,), generator=g))
    f = int(F_FRACTION * n)
    params: Dict[str, Dict[str, object]] = {
        "heterofl": {}, "heterofl_124": {"steps": (1, 2, 4)}, "multikrum": {"f": f}, "zeno": {"b": f},
        "dnc": {"f": f}, "trimmed_mean": {"f": f}, "bulyan": {"f": f},
    }
    name = "heterofl" if rule.startswith("heterofl") else rule
    defense = build_defense(name, **params.get(rule, {}))
    ctx = RoundContext(global_params=w_t, loss_fn=loss_fn, trigger_set=trigger, validation_batch=val,
                       server_update=1e-3 * torch.randn(layout.d, generator=g),
                       sample_counts=torch.randint(50, 500, (n,), generator=g).float())
    return (lambda U: defense(U, ctx)), layout.d


#: our rule -> FedML 0.9.6's implementation of the rule it is named after (timed on the same updates).
#: Not the same computation everywhere: FedML's trimmed_mean trims whole clients by sample count (not
#: per coordinate), RFA takes a geometric median per layer (ours: of the whole update), CClip centres
#: at a random client's model and clips buckets (ours: the previous aggregate, per update).
PEERS = {"multikrum": "fedml_krum", "trimmed_mean": "fedml_trimmed_mean", "bulyan": "fedml_bulyan",
         "geomed": "fedml_rfa", "centered_clipping": "fedml_cclip"}
#: FedML's implementations that loop over all n(n-1) pairs in Python (timed on ``--krum-rows`` rows above n = 100)
PAIRWISE = ("fedml_krum",)


def _fedml_peer(kind: str, n: int, quick: bool, rows: Optional[int]):
    """FedML 0.9.6's own defense ``kind`` on state dicts viewing the same updates (FedML's list format)."""
    from types import SimpleNamespace

    import numpy as np

    model, layout, _ = _model_and_loss(quick)
    f = int(F_FRACTION * n)
    counts = torch.randint(50, 500, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    w_t = OrderedDict(layout.unflatten(layout.flatten(model)))

    def raw(U: torch.Tensor):
        return [(float(counts[i]), OrderedDict(layout.unflatten(U[i]))) for i in range(n)]

    config = SimpleNamespace(byzantine_client_num=f, client_num_per_round=n, krum_param_m=n - 2 * f - 2, beta=f / n,
                             tau=10.0, bucket_size=1, federated_optimizer="FedAvg", training_type="simulation",
                             backend="sp", using_gpu=False, device_type="cpu", gpu_id=0)
    if kind == "fedml_krum":
        from fedml.core.security.defense.krum_defense import KrumDefense

        krum = KrumDefense(config)

        def run(U: torch.Tensor):
            if rows is None:
                return krum.defend_before_aggregation(raw(U))
            # the same per-row work as _compute_krum_score, for `rows` rows only
            from fedml.core.security.common import utils
            vecs = [utils.vectorize_weight(sd) for _, sd in raw(U)]
            for i in range(rows):
                dists = sorted(utils.compute_euclidean_distance(vecs[i], vecs[j]).item() ** 2
                               for j in range(n) if j != i)
                sum(dists[: n - f - 2])
            return None
        return run, layout.d
    from fedml.ml.aggregator.agg_operator import FedMLAggOperator
    if kind == "fedml_trimmed_mean":
        from fedml.core.security.defense.coordinate_wise_trimmed_mean_defense import CoordinateWiseTrimmedMeanDefense

        tm = CoordinateWiseTrimmedMeanDefense(config)
        return (lambda U: FedMLAggOperator.agg(config, tm.defend_before_aggregation(raw(U)))), layout.d
    if kind == "fedml_bulyan":
        from fedml.core.security.defense.bulyan_defense import BulyanDefense

        bulyan = BulyanDefense(config)
        np.random.seed(0)
        return (lambda U: bulyan.run(raw(U))), layout.d
    if kind == "fedml_rfa":
        from fedml.core.security.defense.RFA_defense import RFADefense

        rfa = RFADefense(config)
        return (lambda U: rfa.defend_on_aggregation(raw(U), FedMLAggOperator.agg, w_t)), layout.d
    if kind == "fedml_cclip":
        from fedml.core.security.defense.cclip_defense import CClipDefense

        cclip = CClipDefense(config)

        def run(U: torch.Tensor):
            before = cclip.defend_before_aggregation(raw(U), w_t)
            return cclip.defend_after_aggregation(FedMLAggOperator.agg(config, before))
        return run, layout.d
    raise ValueError(f"unknown FedML peer {kind!r}; allowed: {', '.join(PEERS.values())}")


def run_cell(rule: str, n: int, repeats: int, krum_rows: Optional[int], quick: bool = False) -> Dict[str, object]:
    """Time one rule at one n in this process; returns seconds, per-step seconds and memory."""
    if rule.startswith("fedml_"):
        fn, d = _fedml_peer(rule, n, quick, krum_rows if rule in PAIRWISE else None)
    else:
        fn, d = _ours(rule, n, quick)
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
    if rule in PAIRWISE and krum_rows is not None:
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
    p.add_argument("--fedml-full", action="store_true",
                   help="also time FedML's Bulyan, RFA, CClip and trimmed mean above n = 100 (minutes)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: LR-sized updates (d = 7,850), n = 20, one repeat, our new rules and their peers")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = [20], 1
        args.rules = args.rules or ["fedavg", *PEERS, *PEERS.values()]
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if args.one:
        rule, n = args.one[0], int(args.one[1])
        rows = None if (args.krum_full or n <= 100) else args.krum_rows
        print(json.dumps(run_cell(rule, n, args.repeats if n <= 100 else 1, rows, args.quick)))
        return 0

    from fedml_heterofl.defense import REGISTRY

    rules = args.rules or ["heterofl_124", *sorted(REGISTRY), *PEERS.values()]
    rows = []
    for n in args.n:
        for rule in rules:
            if rule.startswith("fedml_") and rule not in PAIRWISE and n > 100 and not args.fedml_full:
                continue  # FedML's per-coordinate / per-pair Python loops take minutes at n = 1000
            cmd = [sys.executable, __file__, "--one", rule, str(n), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--krum-rows", str(args.krum_rows)]
            if args.krum_full:
                cmd.append("--krum-full")
            if args.quick:
                cmd.append("--quick")
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
    """The README table: seconds, ratio to FedML's Krum at the same n, ratio to FedML's implementation
    of the same rule (:data:`PEERS`), memory multiple, step times."""
    seconds = {(r["rule"], r["n"]): r["seconds"] for r in rows}
    lines = ["| rule | n | seconds | FedML Krum / rule | FedML's same rule | FedML same rule / rule "
             "| extra memory / updates | steps (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        krum = seconds.get(("fedml_krum", r["n"]))
        ratio = f"{krum / r['seconds']:.1f}x" if krum is not None and not r["rule"].startswith("fedml_") else "-"
        peer = PEERS.get(r["rule"])
        peer_s = seconds.get((peer, r["n"]))
        peer_ratio = f"{peer_s / r['seconds']:.1f}x" if peer_s is not None else "-"
        secs = f"{r['seconds']:.3f}" + (" (est.)" if r["estimated"] else "")
        steps = ", ".join(f"{k} {v:.3f}" for k, v in r["steps"].items())
        lines.append(f"| {r['rule']} | {r['n']} | {secs} | {ratio} | {peer or '-'} | {peer_ratio} "
                     f"| {r['extra_mib'] / r['updates_mib']:.2f}x | {steps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
