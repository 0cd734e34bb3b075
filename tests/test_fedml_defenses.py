"""FedML 0.9.6's own defenses as ``fedml:<name>`` (fedml_bridge/fedml_defenses.py): the table of names
is exactly what FedML's FedMLDefender accepts, one round of each on a small model (the ones FedML itself
breaks are exactly the documented BROKEN list), FedML's decisions checked against independent
computations, the adaptive attack with a FedML defense as its oracle, and the lazy registry."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedml_heterofl.attack import build_attack
from fedml_heterofl.defense import REGISTRY, RoundContext, build_defense
from fedml_heterofl.defense.oracle import Oracle, private_generator
from fedml_heterofl.models import ParamLayout
from fedml_heterofl.simulation.server_round import ServerRound

fd = pytest.importorskip("fedml_heterofl.fedml_bridge.fedml_defenses")

N, F = 10, 2


def small_round(seed=0, n=N, counts=None):
    """A two-layer model's layout, its flat weights and n updates (two of them far off)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    layout = ParamLayout(model)
    g = torch.Generator().manual_seed(seed)
    U = 0.1 * torch.randn(n, layout.d, generator=g)
    U[:F] += 2.0
    counts = torch.arange(1.0, n + 1) if counts is None else counts
    ctx = RoundContext(round_idx=0, global_params=layout.flatten(model), client_ids=torch.arange(n),
                       sample_counts=counts, param_layout=layout)
    return U, ctx, layout


def rule(kind, **extra):
    params = dict(fd.EXAMPLE_PARAMS.get(kind, {}))
    if "f" in fd.FEDML_DEFENSES[kind]:
        params["f"] = F
    params.update(extra)
    return build_defense(fd.PREFIX + kind, **params)


def test_the_table_is_what_fedml_defender_accepts():
    """Every defense name among FedML's constants is accepted by FedMLDefender.init iff it is in the table
    (FedML's own init, unwrapped from our registration shim; a missing config key means accepted)."""
    import inspect

    from fedml.core.security import constants
    from fedml.core.security.fedml_defender import FedMLDefender

    names = {v for k, v in vars(constants).items() if isinstance(v, str) and (k.startswith("DEFENSE_") or k == "ANOMALY_DETECTION")}
    accepted = set()
    for name in names:
        try:
            inspect.unwrap(FedMLDefender.init)(FedMLDefender(), SimpleNamespace(enable_defense=True, defense_type=name))
            accepted.add(name)
        except Exception as exc:  # FedML raises a bare Exception for an unknown name
            if "args.defense_type is not defined" not in str(exc):
                accepted.add(name)
    assert accepted == set(fd.FEDML_DEFENSES)
    assert set(fd.BROKEN) | set(fd.NO_OP) | set(fd.WRONG) <= set(fd.FEDML_DEFENSES)


def test_one_round_of_each_fedml_defense_and_the_broken_ones_are_documented():
    broken, results = {}, {}
    for kind in fd.FEDML_DEFENSES:
        U, ctx, _ = small_round()
        try:
            res = rule(kind)(U, ctx)
            results[kind] = res
            assert res.update.shape == (U.shape[1],)
        except fd.FedMLDefenseError as exc:  # an error in FedML, or a non-finite aggregate
            broken[kind] = str(exc)
    assert set(broken) == set(fd.BROKEN), broken
    for kind, res in results.items():
        assert torch.isfinite(res.update).all()
    # FedML's Krum (m = 1) keeps one row; Multi-Krum (m = 3) three; the far-off rows 0, 1 are not among them
    assert int(results["krum"].kept.sum()) == 1 and int(results["multikrum"].kept.sum()) == 3
    assert not results["multikrum"].kept[:F].any()


def fedavg(U, counts):
    w = counts.double() / counts.double().sum()
    return (w @ U.double()).float()


def test_no_op_defenses_aggregate_as_fedml_fedavg():
    for kind in fd.NO_OP:
        U, ctx, _ = small_round()
        assert torch.allclose(rule(kind)(U, ctx).update, fedavg(U, ctx.sample_counts), atol=1e-5)


def test_fedml_krum_picks_the_lowest_krum_score_by_loop():
    U, ctx, _ = small_round(seed=3)
    X = U.double().numpy()
    scores = [sum(sorted(float(np.sum((X[i] - X[j]) ** 2)) for j in range(N) if j != i)[:N - F - 2]) for i in range(N)]
    best = int(np.argmin(scores))
    res = rule("krum")(U, ctx)
    assert res.kept.nonzero().flatten().tolist() == [best]
    assert torch.allclose(res.update, U[best], atol=1e-5)
    assert res.removed_by["fedml"].tolist() == [i for i in range(N) if i != best]


def test_the_wrong_ones_are_wrong_as_documented():
    # RFA with equal sample counts: the set of weights collapses to one and the median is client 0's model
    U, ctx, _ = small_round(seed=1, counts=torch.full((N,), 7.0))
    assert torch.allclose(rule("rfa")(U, ctx).update, U[0], atol=1e-5)
    # geo_median with equal counts: one batch weight -> the first batch's mean (batch size ceil(10/5) = 2)
    assert torch.allclose(rule("geo_median")(U, ctx).update, U[:2].mean(0), atol=1e-5)
    # FedML's trimmed_mean (β = 0.2 of n = 10: 2 per end) drops the clients with the 2 lowest and the 2
    # highest sample counts, whatever their updates; then FedAvg of the others
    counts = torch.tensor([5.0, 1, 9, 3, 10, 7, 2, 8, 4, 6])
    U, ctx, _ = small_round(seed=2, counts=counts)
    res = rule("trimmed_mean")(U, ctx)
    middle = [i for i in range(N) if 3 <= counts[i] <= 8]
    assert res.kept.nonzero().flatten().tolist() == middle
    assert torch.allclose(res.update, fedavg(U[middle], counts[middle]), atol=1e-5)


def test_a_permutation_of_the_rows_permutes_the_outcome():
    """FedML's rules read their list in order (its trimmed mean breaks ties in sample counts by position,
    its sums add in order); the wrapper presents the list by client id, so permuting the rows with their
    ids and counts permutes the kept rows and leaves the aggregate bit for bit the same."""
    counts = torch.tensor([5.0, 5, 5, 9, 5, 5, 2, 5, 5, 5])  # tied: the trimmed mean's ends depend on order
    perm = torch.tensor([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    for kind in sorted(set(fd.FEDML_DEFENSES) - set(fd.BROKEN)):
        U, ctx, _ = small_round(seed=4, counts=counts)
        ref = rule(kind)(U, ctx)
        moved = RoundContext(round_idx=0, global_params=ctx.global_params, client_ids=perm, sample_counts=counts[perm],
                             param_layout=ctx.param_layout)
        out = rule(kind)(U[perm], moved)
        assert torch.equal(out.kept, ref.kept[perm]), kind
        assert torch.equal(out.update, ref.update), kind
    # by hand: β = 0.2 of 10 trims 2 per end of the list sorted (stably) by count, in client id order:
    # ids 6 (2) and 0 (the first 5) at the low end, 9 (the last 5) and 3 (9) at the high end
    out = rule("trimmed_mean")(U[perm], moved)
    assert sorted(perm[out.kept].tolist()) == [1, 2, 4, 5, 7, 8]


def test_the_oracle_agrees_with_a_fedml_rule_that_reads_the_list_order():
    """The attacks' oracle calls the rule on cat(benign, own), the server on the round's order; with tied
    sample counts FedML's trimmed mean decides by position, and both must still decide alike."""
    U, ctx, layout = small_round(seed=6, n=12, counts=torch.full((12,), 5.0))
    for name in ("adaptive", "adaptive_deviation"):
        attack = build_attack(name)
        server = ServerRound(rule("trimmed_mean"), attack=attack, malicious_ids=(1, 3, 8), seed=0,
                             param_layout=layout)
        out = server(0, ctx.global_params, torch.arange(12), U, ctx.sample_counts)
        assert attack.report["oracle_calls"] > 0, name
        assert out.metrics["oracle_agrees"] == 1.0, name
        if name == "adaptive_deviation":
            assert out.metrics["deviation_agrees"] == 1.0


def test_without_a_layout_the_flat_vector_is_one_linear_layer():
    U, ctx, _ = small_round()
    ctx.param_layout = None
    for kind in ("krum", "3sigma", "wise_median"):
        assert torch.isfinite(rule(kind)(U, ctx).update).all()


def test_missing_and_unknown_parameters_are_named():
    U, ctx, _ = small_round()
    with pytest.raises(ValueError, match="norm_bound"):
        build_defense("fedml:norm_diff_clipping")(U, ctx)
    with pytest.raises(ValueError, match="no parameter 'beta'.*allowed: f, krum_param_m"):
        build_defense("fedml:krum", f=1, beta=0.1)
    with pytest.raises(ValueError, match="f must be"):
        build_defense("fedml:krum", f=-1)
    # FedML's own check (Krum: 2f + 2 <= n - m), reported as a ValueError naming the defense
    with pytest.raises(ValueError, match="fedml:krum.*byzantine_client_num"):
        build_defense("fedml:krum", f=4)(U, ctx)


def test_stateful_fedml_defense_is_not_advanced_by_repeated_calls_of_a_round():
    """CRFL counts its epochs (rounds) and adds seeded noise: calls of the same round give the same
    aggregate (each draws the same seed from a copy of the round's generator, as the oracle's calls and the
    server's do); the next round continues from the last call."""
    U, ctx, _ = small_round()
    crfl = rule("crfl")
    a, b = crfl(U, private_generator(ctx)).update, crfl(U, private_generator(ctx)).update  # as the oracle, then the server
    assert torch.equal(a, b)
    assert crfl._holder.defender.epoch == 2  # one round done: FedML's epoch counter moved once
    ctx.round_idx = 1
    crfl(U, ctx)
    crfl(U, ctx)
    assert crfl._holder.defender.epoch == 3


def test_adaptive_attack_with_a_fedml_defense_as_its_oracle():
    U, ctx, layout = small_round(seed=5, n=12)
    U[:F] -= 2.0  # honest-looking rows this time
    malicious = (3, 8)
    defense = rule("multikrum", krum_param_m=6)
    attack = build_attack("adaptive", gamma_init=2.0, tau=1e-2)
    server = ServerRound(defense, attack=attack, malicious_ids=malicious, seed=0, param_layout=layout)
    out = server(0, ctx.global_params, torch.arange(12), U, ctx.sample_counts)
    assert attack.report["oracle_calls"] > 0
    assert Oracle(defense, U[:10], U[:10].mean(0), U[10:], ctx).plain  # the plain-call fallback
    assert out.metrics["oracle_agrees"] == 1.0
    assert torch.isfinite(out.params).all()


def test_registry_family_is_lazy_and_not_listed():
    assert "fedml:krum" in REGISTRY and REGISTRY.get("fedml:krum").fedml_type == "krum"
    assert not any(name.startswith("fedml:") for name in REGISTRY)  # iteration: our own rules only
    assert "fedml:nope" not in REGISTRY
    with pytest.raises(ValueError, match="allowed: .*fedml:<name>"):
        build_defense("fedml:nope")
    from fedml_heterofl import catalog

    lines = "\n".join(catalog.defense_lines())
    assert "fedml:krum" in lines and "trimmed_mean" in lines and "BROKEN" in lines
    # importing our defenses (and looking up our own names) never imports FedML
    code = ("import sys, fedml_heterofl.defense as d; d.build_defense('geomed'); assert 'geomed' in d.REGISTRY; "
            "assert 'fedml' not in sys.modules, 'fedml imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_families_come_from_the_distributions_entry_points():
    """The registry names no family: the fedml: family is the installed package's entry point, and a
    fresh registry of a group nobody declares has none (so a name of it is unknown, with no import)."""
    from importlib.metadata import entry_points

    from fedml_heterofl.registry import Registry

    declared = {ep.name: ep.value for ep in entry_points(group="fedml_heterofl.defense_families")}
    assert declared == {"fedml": "fedml_heterofl.fedml_bridge.fedml_defenses"}
    assert REGISTRY.providers["fedml:"] == declared["fedml"]
    other = Registry("defense", families="fedml_heterofl.no_such_group")
    assert other.providers == {} and "fedml:krum" not in other
    defense_source = (Path(__file__).resolve().parents[1] / "fedml_heterofl" / "defense" / "base.py").read_text()
    assert "fedml_bridge" not in defense_source


def test_readme_lists_exactly_the_broken_no_op_and_wrong_ones():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    bullets = {}
    for label in ("broken", "no-op", "not the rule they are named after"):
        start = text.index(f"- **{label}**")
        end = text.find("\n- **", start + 1)
        end = min(e for e in (end, text.find("\n\n", start)) if e != -1)
        bullets[label] = set(re.findall(r"`fedml:([\w]+)`", text[start:end]))
    assert bullets["broken"] == set(fd.BROKEN)
    assert bullets["no-op"] == set(fd.NO_OP)
    assert bullets["not the rule they are named after"] == set(fd.WRONG)


def test_cli_lists_defenses_and_attacks(capsys):
    from fedml_heterofl.cli import main as cli_main

    assert cli_main(["defenses"]) == 0
    out = capsys.readouterr().out
    assert "bulyan" in out and "fedml:3sigma_geo" in out and "BROKEN" in out
    assert cli_main(["defenses", "--no-fedml"]) == 0
    assert "fedml:" not in capsys.readouterr().out  # our rules only
    assert cli_main(["attacks"]) == 0
    out = capsys.readouterr().out
    assert "alie" in out and "ipm" in out and "epsilon" in out


def test_run_settings_fill_fedml_parameters():
    from fedml_heterofl.fedml_bridge.args import defense_from_args

    args = SimpleNamespace(enable_defense=True, defense_type="fedml:crfl", defense_params={"clip_threshold": 5.0},
                           enable_attack=True, byzantine_client_num=3, comm_round=7, dataset="mnist")
    crfl = defense_from_args(args)
    assert crfl.params == {"clip_threshold": 5.0, "comm_round": 7, "dataset": "mnist"}
    args.defense_type, args.defense_params = "fedml:krum", {}
    assert defense_from_args(args).params == {"f": 3}
