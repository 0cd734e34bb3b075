"""Attacks: Min-Max / Min-Sum constraints against plain loops, the adaptive attack against defenses
as oracles, label and sign flipping on hand-made inputs, attacker draws, bad input."""
import math

import pytest
import torch

from fedml_heterofl.attack import REGISTRY, apply_model_attack, build_attack, choose_attackers
from fedml_heterofl.attack.base import DataAttack, ModelAttack
from fedml_heterofl.attack.gamma_search import gamma_search, perturbation
from fedml_heterofl.defense import Defense, RoundContext, Selection, build_defense
from fedml_heterofl.defense.heterofl import HeteroFL, watermark_verification
from fedml_heterofl.models import ParamLayout, batched_loss


def benign_set(n, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.3 + torch.randn(n, d, generator=g, dtype=torch.float64)) * torch.rand(n, 1, generator=g,
                                                                                    dtype=torch.float64)


def sq(a, b):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def min_max_loop(m, R):
    """(max_i ‖m − g_i‖², max_ij ‖g_i − g_j‖²) with plain loops."""
    return max(sq(m, r) for r in R), max(sq(a, b) for a in R for b in R)


def min_sum_loop(m, R, bound):
    sums = [sum(sq(a, b) for b in R) for a in R]
    return sum(sq(m, r) for r in R), (min(sums) if bound == "min" else max(sums))


def direction_loop(R, kind):
    n, d = len(R), len(R[0])
    mean = [sum(float(R[i][j]) for i in range(n)) / n for j in range(d)]
    if kind == "unit_vec":
        norm = math.sqrt(sum(v * v for v in mean))
        return [-v / norm for v in mean]
    if kind == "sign":
        return [-(v > 0) + (v < 0) for v in mean]
    return [-math.sqrt(sum((float(R[i][j]) - mean[j]) ** 2 for i in range(n)) / (n - 1)) for j in range(d)]


@pytest.mark.parametrize("kind", ["unit_vec", "std", "sign"])
@pytest.mark.parametrize("n", [5, 23, 100])
@pytest.mark.parametrize("name, bound", [("min_max", None), ("min_sum", "min"), ("min_sum", "max")])
@pytest.mark.parametrize("knowledge", ["full", "full_with_own"])
def test_min_max_min_sum_constraint_holds_and_is_tight(kind, n, name, bound, knowledge):
    f = 3
    U = benign_set(n + f, d=12 if n == 100 else 30, seed=n)
    benign, own = U[:n], U[n:]
    params = {"perturbation": kind, "knowledge": knowledge} | ({"bound": bound} if bound else {})
    attack = build_attack(name, **params)
    out = attack.attack(benign, own)
    assert out.shape == own.shape and torch.equal(out[0], out[-1])  # every attacker sends the same m
    # the reference set: the honest clients' updates (NDSS'21's code), with the attackers' own honest ones
    R = (benign if knowledge == "full" else U).tolist()
    mean = [sum(col) / len(R) for col in zip(*R)]
    delta = direction_loop(R, kind)
    gamma = attack.report["gamma"]
    # the output is ḡ + γΔ for the reported γ
    expected = torch.tensor([mu + gamma * dl for mu, dl in zip(mean, delta)], dtype=torch.float64)
    assert torch.allclose(out[0], expected, atol=1e-9)

    def check(m):
        return min_max_loop(m, R) if name == "min_max" else min_sum_loop(m, R, bound)

    value, limit = check(out[0].tolist())
    assert gamma > 0 and value <= limit * (1 + 1e-9)
    tau = attack.tau
    value2, limit2 = check([mu + (gamma + 2 * tau) * dl for mu, dl in zip(mean, delta)])
    assert value2 > limit2, "γ + 2τ must violate the constraint (tight search)"


def test_min_sum_min_bound_is_stricter_than_max():
    U = benign_set(30, seed=4)
    lo = build_attack("min_sum", bound="min")
    hi = build_attack("min_sum", bound="max")
    lo.attack(U[:25], U[25:])
    hi.attack(U[:25], U[25:])
    assert lo.report["gamma"] < hi.report["gamma"]
    # the default is NDSS'21's released code's min bound
    default = build_attack("min_sum")
    default.attack(U[:25], U[25:])
    assert default.bound == "min" and default.report["gamma"] == lo.report["gamma"]


@pytest.mark.parametrize("name", ["min_max", "min_sum", "adaptive"])
def test_full_knowledge_is_the_benign_updates_only_by_default(name):
    """Hand-made: benign rows (0, 0) and (2, 0), one attacker whose honest update is (10, 10). The
    default reference set is the benign rows only (mean (1, 0)); ``full_with_own`` adds (10, 10)
    (mean (4, 10/3)). With the unit-vector perturbation every output is ``mean + γ·(-mean/‖mean‖)``,
    so it lies on the line through the origin and the reference mean, on the mean's side."""
    benign = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    own = torch.tensor([[10.0, 10.0]], dtype=torch.float64)
    extra = {"bound": "max"} if name == "min_sum" else {}

    def run(knowledge):
        attack = build_attack(name, perturbation="unit_vec", knowledge=knowledge, **extra)
        return attack.attack(benign, own, defense=build_defense("fedavg", weighted=False))[0], attack.report["gamma"]

    (out, gamma), (out_own, gamma_own) = run("full"), run("full_with_own")
    assert out[1] == 0 and out[0] == pytest.approx(1 - gamma)  # on the x-axis: mean (1, 0)
    # on the line through (4, 10/3): y/x = 5/6
    assert out_own[1] == pytest.approx(out_own[0] * 5 / 6) and out_own[1] != 0
    if name != "adaptive":  # Min-Max/Min-Sum bounds from the two reference sets, by hand
        # refs (0,0), (2,0); m = (1 - γ, 0), squared distances (1 - γ)² and (1 + γ)².
        # Min-Max: max = (1 + γ)² <= max pairwise 4 → γ = 1. Min-Sum (max bound):
        # (1 - γ)² + (1 + γ)² = 2 + 2γ² <= max_j Σ_i ‖g_j − g_i‖² = 4 → γ = 1.
        assert gamma == pytest.approx(1.0, abs=1e-4)


def test_partial_knowledge_uses_only_the_attackers_updates():
    U = benign_set(20, seed=5)
    benign, own = U[:15], U[15:]
    a = build_attack("min_max", knowledge="partial")
    out = a.attack(benign, own)
    other = build_attack("min_max", knowledge="partial").attack(benign * 50, own)  # benign ignored
    assert torch.equal(out, other)
    value, limit = min_max_loop(out[0].tolist(), own.tolist())
    assert value <= limit * (1 + 1e-9)


def test_perturbations_hand_computed():
    R = torch.tensor([[1.0, -2.0, 0.0], [3.0, -2.0, 2.0]])
    # mean (2, -2, 1), norm 3
    assert torch.allclose(perturbation(R, "unit_vec"), torch.tensor([-2 / 3, 2 / 3, -1 / 3]))
    assert torch.equal(perturbation(R, "sign"), torch.tensor([-1.0, 1.0, -1.0]))
    # unbiased std per column: (|1-3|/sqrt(2), 0, |0-2|/sqrt(2))
    assert torch.allclose(perturbation(R, "std"), -torch.tensor([math.sqrt(2), 0.0, math.sqrt(2)]))


def test_gamma_search_terminates_and_covers_twice_gamma_init():
    calls = []
    gamma, n = gamma_search(lambda g: calls.append(g) or False, 10.0, 1e-5)
    assert gamma == 0.0 and n == len(calls) and n <= 25  # nothing succeeds: γ = 0, terminates
    gamma, _ = gamma_search(lambda g: True, 10.0, 1e-5)
    assert 20.0 - 2e-5 <= gamma < 20.0  # everything succeeds: up to 2·γ_init
    gamma, _ = gamma_search(lambda g: g <= 3.7, 10.0, 1e-5)
    assert 3.7 - 2e-5 <= gamma <= 3.7


# ------------------------------------------------------------------------------ adaptive attack

class KeepSmallNorms(Defense):
    """Test rule (a user's rule: no fast oracle): keep updates whose norm is at most ``factor`` times the
    median norm; mean of kept."""

    name = "test_keep_small_norms"

    def __init__(self, *, factor=1.5):
        self.factor = factor

    def select(self, updates, ctx):
        norms = updates.norm(dim=1)
        kept = norms <= self.factor * norms.median()
        return Selection(kept, weights=kept.float() / kept.sum())


class RemoveLast(Defense):
    """Test rule that always removes the last 2 rows (where the attack puts its updates)."""

    name = "test_remove_last"

    def select(self, updates, ctx):
        kept = torch.ones(updates.shape[0], dtype=torch.bool)
        kept[-2:] = False
        return Selection(kept, weights=kept.float() / kept.sum())


def test_adaptive_finds_the_largest_gamma_the_oracle_accepts():
    U = benign_set(20, seed=7).float()
    benign, own = U[:16], U[16:]
    attack = build_attack("adaptive", perturbation="unit_vec", gamma_init=10.0, mu=0.1)
    defense = KeepSmallNorms()
    out = attack.attack(benign, own, RoundContext(), defense=defense)
    gamma = attack.report["gamma"]
    assert 0 < gamma < 20
    assert defense(torch.cat([benign, out])).kept[-4:].all()
    # a clearly larger γ is not accepted
    mean = benign.mean(dim=0)  # full knowledge: the benign updates' mean
    larger = mean + (out - mean) * (gamma + 0.05) / gamma
    assert not defense(torch.cat([benign, larger])).kept[-4:].all()
    # attackers 2..f flip ⌈μ·d⌉ = 4 signs of Δ_1 (d = 40)
    d1 = (out[0] - mean) / gamma
    for k in range(1, 4):
        dk = (out[k] - mean) / gamma
        assert int((torch.sign(dk) != torch.sign(d1)).sum()) == 4
    assert attack.report["flipped_coordinates"] == 4 and attack.report["oracle_calls"] >= 15


def test_gamma_search_ends_at_starts_beyond_float64_resolution_of_tau():
    # at γ ~ 1e15 a step of 1e-5 is below float64's resolution (~0.1 there): the precision becomes
    # 2^-40 · γ_init (~900), and the search ends in about 40 steps, within that of the true boundary
    boundary = 1.234e15
    gamma, calls = gamma_search(lambda g: g <= boundary, 1e15, 1e-5)
    assert calls <= 45 and boundary - 1e15 * 2.0**-39 <= gamma <= boundary
    # ordinary scales keep τ itself: γ_init = 10, τ = 1e-5 -> within 1e-5 of a boundary at 3
    gamma, _ = gamma_search(lambda g: g <= 3.0, 10.0, 1e-5)
    assert 3.0 - 2e-5 <= gamma <= 3.0


def test_adaptive_terminates_when_no_gamma_succeeds():
    U = benign_set(10, seed=8).float()
    attack = build_attack("adaptive", gamma_init=1.0, tau=1e-4)
    out = attack.attack(U[:8], U[8:], RoundContext(), defense=RemoveLast())
    assert attack.report["gamma"] == 0.0 and attack.report["success"] == 0.0
    assert torch.allclose(out, U[:8].mean(dim=0).expand(2, -1))  # γ = 0: the benign mean


def test_adaptive_does_not_consume_the_rounds_generator():
    U = benign_set(12, seed=9).float()
    ctx = RoundContext(generator=torch.Generator().manual_seed(5))
    before = ctx.generator.get_state()
    build_attack("adaptive").attack(U[:9], U[9:], ctx, defense=KeepSmallNorms())
    assert torch.equal(ctx.generator.get_state(), before)
    with pytest.raises(ValueError, match="needs the server's defense as its oracle"):
        build_attack("adaptive").attack(U[:9], U[9:], ctx)


def tiny_watermark_round(seed=0, n=12, f=3):
    """A linear model with a watermark output; honest updates train on data + trigger set."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(5, 4)
    torch.nn.init.normal_(model.weight, generator=g)
    torch.nn.init.normal_(model.bias, generator=g)  # seeded too: the test must not depend on the global RNG
    layout = ParamLayout(model)
    w_t = layout.flatten(model)
    trig = (3 * torch.randn(4, 5, generator=g), torch.full((4,), 3))
    rows = []
    for i in range(n):
        x = torch.randn(10, 5, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, i % 2 + 1] > 0).long()
        m = torch.nn.Linear(5, 4)
        layout.load(m, w_t)
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        xs, ys = torch.cat([x, trig[0]]), torch.cat([y, trig[1]])
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xs), ys).backward()
            opt.step()
        rows.append(layout.flatten(m) - w_t)
    U = torch.stack(rows)
    ctx = RoundContext(global_params=w_t, trigger_set=trig, loss_fn=lambda p, b: batched_loss(model, layout, p, b))
    return U[: n - f], U[n - f:], ctx


def test_adaptive_against_heterofl_keeps_the_watermark():
    benign, own, ctx = tiny_watermark_round()
    defense = HeteroFL(lam=-0.5)
    attack = build_attack("adaptive", perturbation="std", gamma_init=5.0, tau=1e-3)
    out = attack.attack(benign, own, ctx, defense=defense)
    assert attack.report["gamma"] > 0
    res = defense(torch.cat([benign, out]), ctx)
    assert res.kept[-3:].all()
    wm = watermark_verification(out, ctx.global_params, ctx.loss_fn, ctx.trigger_set, lam=-0.5)
    assert not wm.malicious.any()
    # the same direction pushed 2.5 times as far no longer passes HeteroFL
    mean = benign.mean(dim=0)  # full knowledge: the benign updates' mean
    far = mean + 2.5 * (out - mean)
    assert not defense(torch.cat([benign, far]), ctx).kept[-3:].all()


# ------------------------------------------------------------------------------ LF, SF, attackers

def test_label_flip_hand_made():
    x = torch.arange(6.0).reshape(6, 1)
    y = torch.tensor([0, 1, 2, 9, 10, 4])  # 10 = the trigger label L (kept)
    px, py = build_attack("label_flip", num_classes=10).poison(x, y)
    assert py.tolist() == [9, 8, 7, 0, 10, 5] and torch.equal(px, x)
    assert y.tolist() == [0, 1, 2, 9, 10, 4]  # input not modified
    with pytest.raises(ValueError, match="num_classes"):
        build_attack("label_flip", num_classes=1)


def test_sign_flip_hand_made():
    own = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    a = build_attack("sign_flip", z=3)
    assert torch.equal(a.attack(torch.zeros(2, 2) + 1, own), torch.tensor([[-3.0, 6.0], [-1.5, 0.0]]))
    assert build_attack("sign_flip").z == 10.0


def test_attackers_fixed_by_seed():
    a = choose_attackers(100, 20, seed=3)
    assert a == choose_attackers(100, 20, seed=3) and len(set(a)) == 20 and all(0 <= i < 100 for i in a)
    assert a != choose_attackers(100, 20, seed=4)
    assert choose_attackers(10, 0, seed=1) == ()
    with pytest.raises(ValueError, match="f=10 attackers must be fewer than the 10 clients"):
        choose_attackers(10, 10, seed=1)


def test_same_seed_same_outputs():
    U = benign_set(15, seed=11).float()
    outs = []
    for _ in range(2):
        ctx = RoundContext(generator=torch.Generator().manual_seed(7))
        outs.append(build_attack("adaptive", mu=0.2).attack(U[:12], U[12:], ctx, defense=KeepSmallNorms()))
    assert torch.equal(outs[0], outs[1])


def test_apply_model_attack_orders_rows_and_context():
    U = benign_set(6, d=4, seed=12).float()
    malicious = torch.tensor([False, True, False, False, True, False])
    ctx = RoundContext(client_ids=torch.tensor([10, 11, 12, 13, 14, 15]))
    seen = {}

    class Spy(ModelAttack):
        name = "test_spy"

        def poison_updates(self, benign, own, c, defense):
            seen["ids"] = c.client_ids.tolist()
            seen["own"] = own
            return torch.zeros_like(own)

    out, predicted = apply_model_attack(Spy(), U, malicious, ctx)
    assert predicted is None  # Spy has no oracle
    assert seen["ids"] == [10, 12, 13, 15, 11, 14]  # cat(benign, own)
    assert torch.equal(seen["own"], U[malicious])
    assert torch.equal(out[~malicious], U[~malicious]) and not out[malicious].any()


# ------------------------------------------------------------------------------ bad input

def test_bad_input():
    U = benign_set(6, d=4, seed=13).float()
    a = build_attack("min_max")
    assert a.attack(U, U[:0]).shape == (0, 4) and a.report == {"f": 0}  # f = 0: no-op
    with pytest.raises(ValueError, match="all 3 updates of the round are the attackers'"):
        a.attack(U[:0], U[:3])
    bad = U[:2].clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"own updates have non-finite rows \[1\]"):
        a.attack(U[2:], bad)
    with pytest.raises(ValueError, match="d=4 but the attackers' have d=3"):
        a.attack(U, U[:2, :3])
    with pytest.raises(ValueError, match="perturbation='foo' is not allowed; allowed: unit_vec, std, sign"):
        build_attack("min_max", perturbation="foo")
    with pytest.raises(ValueError, match="tau must be a positive number"):
        build_attack("min_sum", tau=0)
    with pytest.raises(ValueError, match="unknown attack 'lf'; allowed: adaptive, adaptive_deviation, alie, ipm, label_flip"):
        build_attack("lf")
    with pytest.raises(ValueError, match="needs at least 2 known benign updates"):
        build_attack("min_max", knowledge="partial").attack(U, U[:1])


def test_registry_kinds():
    assert set(REGISTRY) >= {"label_flip", "sign_flip", "min_max", "min_sum", "adaptive"}
    assert issubclass(REGISTRY["label_flip"], DataAttack)
    assert all(issubclass(REGISTRY[k], ModelAttack) for k in ("sign_flip", "min_max", "min_sum", "adaptive"))


def test_adaptive_against_multikrum_finds_the_boundary():
    U = benign_set(24, d=30, seed=21).float()
    benign, own = U[:20], U[20:]
    defense = build_defense("multikrum", f=4)
    attack = build_attack("adaptive", perturbation="std", gamma_init=10.0, tau=1e-4)
    out = attack.attack(benign, own, RoundContext(), defense=defense)
    gamma = attack.report["gamma"]
    assert gamma > 0
    assert defense(torch.cat([benign, out])).kept[-4:].all()
    mean = U.mean(dim=0)
    larger = mean + (out - mean) * 2.0  # twice the found scale
    assert not defense(torch.cat([benign, larger])).kept[-4:].all()


def test_adaptive_against_median_pushes_the_aggregate_until_it_stops_moving():
    # Median keeps every update, so the oracle's second condition decides: γ grows while the
    # coordinate-wise median still moves away from the benign mean (NDSS'21's Median objective); the
    # greedy search stops where further steps gain little.
    U = benign_set(14, d=20, seed=22).float()
    benign, own = U[:10], U[10:]
    defense = build_defense("median")
    attack = build_attack("adaptive", perturbation="unit_vec", gamma_init=5.0, tau=1e-4, mu=0.0)
    out = attack.attack(benign, own, RoundContext(), defense=defense)
    gamma, mean = attack.report["gamma"], U.mean(dim=0)

    def deviation(scale):
        return float((defense(torch.cat([benign, mean + (out - mean) * scale])).update - mean).norm())

    assert gamma > 0
    assert deviation(1.0) > deviation(0.5) > deviation(0.0)  # a larger γ moved the median farther ...
    # ... and nearly as far as the largest scale the search explores (2·γ_init = 10) would move it
    assert deviation(1.0) >= 0.95 * deviation(10.0 / gamma)
