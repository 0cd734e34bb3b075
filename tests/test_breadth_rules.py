"""The breadth rules (trimmed mean, Bulyan, geometric median, centered clipping) and attacks (ALIE, IPM):
hand-computed cases, plain-Python loop references, properties and bad input. Expected numbers are
worked out in the comments or by independent loop references, never by the code under test."""
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedml_heterofl.attack import REGISTRY as ATTACKS, build_attack
from fedml_heterofl.attack.alie import z_max
from fedml_heterofl.defense import REGISTRY, RoundContext
from fedml_heterofl.defense.bulyan import Bulyan, closest_to_median_mean
from fedml_heterofl.defense.centered_clipping import CenteredClipping
from fedml_heterofl.defense.geomed import GeoMed
from fedml_heterofl.defense.trimmed_mean import TrimmedMean, trimmed_mean


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def test_registered():
    assert {"trimmed_mean", "bulyan", "geomed", "centered_clipping"} <= set(REGISTRY)
    assert {"alie", "ipm"} <= set(ATTACKS)
    assert all(REGISTRY[k].honest_majority for k in ("trimmed_mean", "bulyan", "geomed", "centered_clipping"))


# ------------------------------------------------------------------------------ plain references

def trimmed_mean_loop(U, f):
    """Per coordinate: sort, drop f at each end, average (Python lists, float64)."""
    rows = U.double().tolist()
    n, d = len(rows), len(rows[0])
    return [sum(sorted(r[k] for r in rows)[f:n - f]) / (n - 2 * f) for k in range(d)]


def bulyan_loop(U, f, ids=None):
    """El Mhamdi et al. Alg. 1 with loops: recursive Krum (r - f - 2 neighbours, at least 1; ties by id),
    then per coordinate the mean of the β values closest to the median (ties: the smaller value)."""
    X = U.double().numpy()
    n = len(X)
    ids = list(range(n)) if ids is None else list(ids)
    remaining, selected = list(range(n)), []
    while len(selected) < n - 2 * f:
        r = len(remaining)
        k = r - f - 2 if r - f - 2 >= 1 else min(1, r - 1)
        best = None
        for i in remaining:
            dists = sorted(float(np.sum((X[i] - X[j]) ** 2)) for j in remaining if j != i)
            score = sum(dists[:k])
            if best is None or score < best[0] - 1e-12 * max(abs(score), 1) or \
                    (abs(score - best[0]) <= 1e-12 * max(abs(score), 1) and ids[i] < ids[best[1]]):
                best = (score, i)
        selected.append(best[1])
        remaining.remove(best[1])
    beta = len(selected) - 2 * f
    out = []
    for k in range(X.shape[1]):
        vals = sorted(X[i, k] for i in selected)
        med = float(np.median(vals))
        chosen = sorted(vals, key=lambda v: (abs(v - med), v))[:beta]
        out.append(sum(chosen) / beta)
    return sorted(selected), out


def weiszfeld_loop(U, nu, iters, init="mean"):
    """RFA's smoothed Weiszfeld with numpy vectors, z itself iterated (not via the Gram matrix)."""
    X = U.double().numpy()
    z = X.mean(axis=0) if init == "mean" else np.zeros(X.shape[1])
    for _ in range(iters):
        b = np.array([1.0 / max(nu, float(np.linalg.norm(z - x))) for x in X])
        z = sum(bi * x for bi, x in zip(b, X)) / b.sum()
    return z


def cc_loop(U, v0, tau, iters):
    """Karimireddy et al.'s CC with loops: v += 1/n Σ (x - v) min(1, τ/‖x - v‖)."""
    X = U.double().numpy()
    v = np.array(v0, dtype=float)
    for _ in range(iters):
        dists = [float(np.linalg.norm(x - v)) for x in X]
        radius = float(np.median(dists)) if tau is None else tau  # torch's median: the lower middle
        if tau is None and len(dists) % 2 == 0:
            radius = sorted(dists)[len(dists) // 2 - 1]
        v = v + sum((x - v) * min(1.0, radius / dd) for x, dd in zip(X, dists)) / len(X)
    return v


# ------------------------------------------------------------------------------ trimmed mean

def test_trimmed_mean_hand_computed():
    # col 0 sorted 1,2,3,4,100 -> drop 1 and 100 -> mean(2,3,4) = 3
    # col 1 sorted -100,10,20,30,40 -> drop -100 and 40 -> mean(10,20,30) = 20
    U = t([[1, 10], [2, 20], [3, 30], [4, 40], [100, -100]])
    res = TrimmedMean(f=1)(U)
    assert torch.allclose(res.update, t([3, 20]))
    assert res.kept.all() and res.weights is None
    assert torch.allclose(TrimmedMean(f=0)(U).update, U.mean(dim=0))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 12), d=st.integers(1, 9), seed=st.integers(0, 10_000), chunk=st.sampled_from([1, 3, 1 << 15]))
def test_trimmed_mean_matches_loop(n, d, seed, chunk):
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    f = (n - 1) // 2
    for ff in {0, f // 2, f}:
        assert np.allclose(trimmed_mean(U, ff, chunk=chunk).double().numpy(), trimmed_mean_loop(U, ff), atol=1e-6)


def test_trimmed_mean_bounded_by_the_benign_values_whatever_the_outliers():
    g = torch.Generator().manual_seed(1)
    benign = torch.randn(7, 5, generator=g)
    for scale in (1e3, 1e30, -1e30):
        U = torch.cat([benign, torch.full((3, 5), scale)])
        out = TrimmedMean(f=3)(U).update
        assert bool((out >= benign.min(dim=0).values - 1e-6).all() and (out <= benign.max(dim=0).values + 1e-6).all())


def test_trimmed_mean_bad_input():
    for f in (-1, True, 1.5, "2", None):
        with pytest.raises(ValueError, match="f must be"):
            TrimmedMean(f=f)
    with pytest.raises(ValueError, match="n=4 updates and f=2"):
        TrimmedMean(f=2)(torch.randn(4, 3))


# ------------------------------------------------------------------------------ Bulyan

def test_closest_to_median_hand_computed():
    # [0, 1, 2, 10, 11], β = 3: median 2, distances 2,1,0,8,9 -> {0, 1, 2} -> 1
    # [0, 2, 4], β = 2: median 2, distances 2,0,2 -> tie 0/4 goes to the smaller value -> mean(2, 0) = 1
    # [0, 1, 3, 10], β = 2: median (1+3)/2 = 2, distances 2,1,1,8 -> {1, 3} -> 2
    assert torch.allclose(closest_to_median_mean(t([[0], [1], [2], [10], [11]]), 3), t([1.0]))
    assert torch.allclose(closest_to_median_mean(t([[4], [2], [0]]), 2), t([1.0]))
    assert torch.allclose(closest_to_median_mean(t([[10], [3], [0], [1]]), 2), t([2.0]))


def test_bulyan_hand_computed():
    # x = 0, 1, 2, 3, 4, 5, 100 (second coordinate 1 for all); n = 7, f = 1: θ = 5, β = 3.
    # Recursive Krum (squared distances, r - f - 2 neighbours):
    #  r=7, k=4: scores 30, 15, 10, 10, 15, 30, huge -> tie x=2/x=3 by id -> pick x=2
    #  r=6, k=3: x=0: 1+9+16=26, x=1: 1+4+9=14, x=3: 1+4+4=9, x=4: 1+1+9=11, x=5: 1+4+16=21 -> x=3
    #  r=5, k=2: x=0: 1+16=17, x=1: 1+9=10, x=4: 1+9=10, x=5: 1+16=17 -> tie by id -> x=1
    #  r=4, k=1: x=0: 16, x=4: 1, x=5: 1 -> x=4;   r=3, k=min(1, 2)=1: x=0: 25, x=5: 25 -> x=0
    # selected {0,1,2,3,4}; step 2 on col 0: median 2, the 3 closest 1,2,3 -> 2; col 1 -> 1
    U = t([[x, 1] for x in (0, 1, 2, 3, 4, 5, 100)])
    res = Bulyan(f=1)(U)
    assert res.kept.tolist() == [True] * 5 + [False, False]
    assert res.removed_by["bulyan"].tolist() == [5, 6]
    assert torch.allclose(res.update, t([2, 1]))


@pytest.mark.parametrize("seed", range(4))
def test_bulyan_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, f = 11, 2
    U = torch.randn(n, 6, generator=g)
    U[:f] *= 5
    res = Bulyan(f=f)(U)
    selected, ref = bulyan_loop(U, f)
    assert res.kept.nonzero().flatten().tolist() == selected
    assert np.allclose(res.update.double().numpy(), ref, atol=1e-6)


def test_bulyan_f0_is_the_mean_and_outliers_are_bounded():
    U = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(Bulyan(f=0)(U).update, U.mean(dim=0), atol=1e-6)
    benign = torch.randn(9, 4, generator=torch.Generator().manual_seed(4))
    U = torch.cat([benign, torch.full((2, 4), 1e6)])  # n = 11 >= 4·2 + 3
    res = Bulyan(f=2)(U)
    # (the two identical outliers may both be selected: once few updates remain, Krum's single nearest
    # neighbour of each is the other at distance 0; step 2 still keeps them out of every coordinate)
    assert bool((res.update >= benign.min(0).values).all() and (res.update <= benign.max(0).values).all())


def test_bulyan_bad_input():
    for f in (-1, True, 0.5):
        with pytest.raises(ValueError, match="f must be"):
            Bulyan(f=f)
    with pytest.raises(ValueError, match="n >= 4f \\+ 3; got n=10 updates and f=2"):
        Bulyan(f=2)(torch.randn(10, 3))


# ------------------------------------------------------------------------------ geometric median

def test_geomed_hand_computed():
    # collinear points x = 0, 1, 10 (y = 1): the geometric median is the middle point (1, 1)
    res = GeoMed(max_iter=2000, ftol=0.0, nu=1e-9)(t([[0, 1], [1, 1], [10, 1]]))
    assert torch.allclose(res.update, t([1, 1]), atol=1e-3)
    # the corners of a square: its centre; every weight 1/4
    res = GeoMed()(t([[1, 1], [1, 3], [3, 1], [3, 3]]))
    assert torch.allclose(res.update, t([2, 2]), atol=1e-5)
    assert torch.allclose(res.weights, torch.full((4,), 0.25), atol=1e-5)


@pytest.mark.parametrize("init", ["mean", "zero"])
@pytest.mark.parametrize("seed", range(3))
def test_geomed_matches_loop(seed, init):
    U = torch.randn(9, 7, generator=torch.Generator().manual_seed(seed)) + 0.5
    for iters, nu in ((1, 0.1), (3, 1e-6), (25, 1e-6)):
        out = GeoMed(max_iter=iters, ftol=0.0, nu=nu, init=init)(U).update
        assert np.allclose(out.double().numpy(), weiszfeld_loop(U, nu, iters, init), atol=1e-5)


def test_geomed_bounded_influence_and_weighting():
    benign = torch.randn(8, 5, generator=torch.Generator().manual_seed(7))
    near = GeoMed()(torch.cat([benign, torch.full((1, 5), 1e2)])).update
    far = GeoMed()(torch.cat([benign, torch.full((1, 5), 1e6)])).update
    assert float((near - far).norm()) < 0.05 * float(benign.norm(dim=1).mean())  # the outlier's size barely matters
    # sample-count weighting: a heavy client pulls the median onto itself (its weight > 1/2)
    U = t([[0, 1], [4, 1], [8, 1]])
    ctx = RoundContext(sample_counts=torch.tensor([1.0, 1.0, 5.0]))
    assert torch.allclose(GeoMed(weighted=True, max_iter=2000, ftol=0.0, nu=1e-9)(U, ctx).update, t([8, 1]), atol=1e-2)


def test_geomed_bad_input():
    for kwargs, key in (({"nu": 0}, "nu"), ({"nu": -1.0}, "nu"), ({"ftol": -1e-3}, "ftol"), ({"max_iter": 0}, "max_iter"),
                        ({"max_iter": 2.5}, "max_iter"), ({"weighted": 1}, "weighted"), ({"init": "median"}, "init"),
                        ({"nu": math.nan}, "nu")):
        with pytest.raises(ValueError, match=key):
            GeoMed(**kwargs)


# ------------------------------------------------------------------------------ centered clipping

def test_centered_clipping_hand_computed():
    # centre 0, τ = 1: (3, 4) (norm 5) clipped to (0.6, 0.8); (0.3, 0.4) (norm 0.5) stays -> v1 = (0.45, 0.6)
    # L = 2: (3,4) - v1 = (2.55, 3.4), norm 4.25 -> (0.6, 0.8); (0.3,0.4) - v1 = (-0.15, -0.2) stays
    #        v2 = v1 + ((0.6 - 0.15)/2, (0.8 - 0.2)/2) = (0.675, 0.9)
    U = t([[3, 4], [0.3, 0.4]])
    assert torch.allclose(CenteredClipping(tau=1.0, iterations=1, center="zero")(U).update, t([0.45, 0.6]))
    assert torch.allclose(CenteredClipping(tau=1.0, iterations=2, center="zero")(U).update, t([0.675, 0.9]))


@pytest.mark.parametrize("tau", [0.5, 2.0, None])
@pytest.mark.parametrize("n", [7, 8])
def test_centered_clipping_matches_loop_over_rounds(tau, n):
    g = torch.Generator().manual_seed(n)
    rule = CenteredClipping(tau=tau, iterations=3)
    v0 = np.zeros(4)
    for r in range(3):
        U = torch.randn(n, 4, generator=g) + 1.0
        out = rule(U, RoundContext(round_idx=r)).update
        ref = cc_loop(U, v0, tau, 3)
        assert np.allclose(out.double().numpy(), ref, atol=1e-5)
        v0 = ref  # "previous": the next round is centred at this round's aggregate


def test_centered_clipping_state_is_the_last_call_of_the_previous_round():
    g = torch.Generator().manual_seed(0)
    U0, U1, decoy = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), 50 + torch.randn(5, 3, generator=g)
    rule = CenteredClipping(tau=0.3, iterations=1)
    rule(decoy, RoundContext(round_idx=0))  # an oracle's call of round 0 ...
    v0 = rule(U0, RoundContext(round_idx=0)).update  # ... then the server's: round 1 starts here
    a = rule(decoy, RoundContext(round_idx=1)).update  # an oracle's call of round 1 ...
    b = rule(U1, RoundContext(round_idx=1)).update  # must not move the server's centre
    assert np.allclose(b.double().numpy(), cc_loop(U1, v0.double().numpy(), 0.3, 1), atol=1e-6)
    assert not torch.allclose(a, b)


def test_centered_clipping_affine_aggregate_hand_computed_and_against_the_loop():
    """The oracle's form v_L = Σ a_i g_i + β v₀ from the Gram matrix (not the rows)."""
    from fedml_heterofl.defense.rows import DenseRows
    # the hand-computed case above: the clipped (0.6, 0.8) is 0.2·(3, 4), so v1 = (0.2·g_1 + g_2)/2
    # iteration 1: s = (1/5, 1), a = s/2 = (0.1, 0.5); v1 = 0.1·(3, 4) + 0.5·(0.3, 0.4) = (0.45, 0.6)
    U = t([[3, 4], [0.3, 0.4]])
    rule = CenteredClipping(tau=1.0, iterations=1, center="zero")
    a, shift = rule.affine_aggregate(DenseRows(U), rule.select(U, RoundContext()), RoundContext())
    assert shift is None and torch.allclose(a, torch.tensor([0.1, 0.5], dtype=torch.float64))
    # iteration 2: ‖(3,4) − v1‖ = 4.25, s = (1/4.25, 1), a ← a·(1 − Σs/2) + s/2
    rule = CenteredClipping(tau=1.0, iterations=2, center="zero")
    a, _ = rule.affine_aggregate(DenseRows(U), rule.select(U, RoundContext()), RoundContext())
    s1 = 1 / 4.25
    expected = torch.tensor([0.1, 0.5], dtype=torch.float64) * (1 - (s1 + 1) / 2) + torch.tensor([s1, 1]) / 2
    assert torch.allclose(a, expected) and torch.allclose((a @ U.double()).float(), t([0.675, 0.9]))
    # with the previous round's centre, over rounds, against the plain loop
    g = torch.Generator().manual_seed(4)
    for tau in (0.5, None):
        rule, v0 = CenteredClipping(tau=tau, iterations=3), np.zeros(4)
        for r in range(3):
            U = torch.randn(7, 4, generator=g) + 1.0
            a, shift = rule.affine_aggregate(DenseRows(U), rule.select(U, RoundContext(round_idx=r)),
                                             RoundContext(round_idx=r))
            assert (shift is None) == (r == 0)
            v = (a @ U.double()).numpy() + (0 if shift is None else shift.beta * shift.vector.double().numpy())
            ref = cc_loop(U, v0, tau, 3)
            assert np.allclose(v, ref, atol=1e-9)
            rule(U, RoundContext(round_idx=r))  # the server's call: the next round centres here
            v0 = ref


def test_centered_clipping_bounded_influence_and_large_tau_is_the_mean():
    g = torch.Generator().manual_seed(2)
    U = torch.randn(10, 4, generator=g)
    assert torch.allclose(CenteredClipping(tau=1e9, center="zero")(U).update, U.mean(0), atol=1e-6)
    # one update moved arbitrarily far moves v_L by at most 2·L·τ/n: one iteration is the mean over i of
    # v ↦ v + clip_τ(x_i − v) = x_i − s(x_i − v) with s(u) = u − clip_τ(u), which is 1-Lipschitz in v, so
    # the two runs' centres drift apart by at most the changed term's 2τ/n per iteration
    far = U.clone()
    far[0] = 1e8
    for tau in (0.1, 1.0):
        a = CenteredClipping(tau=tau, iterations=3, center="zero")(U).update
        b = CenteredClipping(tau=tau, iterations=3, center="zero")(far).update
        assert float((a - b).norm()) <= 2 * 3 * tau / 10 + 1e-5


def test_centered_clipping_bad_input():
    for kwargs, key in (({"tau": 0}, "tau"), ({"tau": -1.0}, "tau"), ({"tau": math.inf}, "tau"), ({"tau": True}, "tau"),
                        ({"iterations": 0}, "iterations"), ({"iterations": 1.0}, "iterations"),
                        ({"center": "mean"}, "center")):
        with pytest.raises(ValueError, match=key):
            CenteredClipping(**kwargs)


# ------------------------------------------------------------------------------ properties of all four

def make(name, n):
    f = (n - 3) // 4 if name == "bulyan" else (n - 1) // 2 // 2
    return {"trimmed_mean": lambda: TrimmedMean(f=f), "bulyan": lambda: Bulyan(f=f), "geomed": lambda: GeoMed(),
            "centered_clipping": lambda: CenteredClipping()}[name]()  # τ = median: no clip when all agree


@pytest.mark.parametrize("name", ["trimmed_mean", "bulyan", "geomed", "centered_clipping"])
@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 11), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_permutation_invariance_and_identical_updates(name, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g) + 0.3
    perm = torch.randperm(n, generator=g)
    res = make(name, n)(U, RoundContext(client_ids=torch.arange(n)))
    res_p = make(name, n)(U[perm], RoundContext(client_ids=perm))
    assert torch.equal(res_p.kept, res.kept[perm])
    assert torch.allclose(res_p.update, res.update, atol=1e-5)
    v = U[0]
    assert torch.allclose(make(name, n)(v.repeat(n, 1)).update, v, atol=1e-5)


# ------------------------------------------------------------------------------ ALIE

def test_z_max_hand_computed():
    # n = 100, f = 20: s = ⌊51⌋ - 20 = 31, Φ⁻¹(69/100) = 0.4958 (normal table)
    assert z_max(100, 20) == pytest.approx(0.49585, abs=1e-4)
    # n = 50, f = 24 (Baruch et al.'s largest f): s = 26 - 24 = 2, Φ⁻¹(48/50) = 1.7507
    assert z_max(50, 24) == pytest.approx(1.75069, abs=1e-4)
    # n = 10, f = 1: s = 5, Φ⁻¹(0.5) = 0
    assert z_max(10, 1) == 0.0
    with pytest.raises(ValueError, match="n=4, f=3"):
        z_max(4, 3)


def test_alie_hand_computed():
    # benign coordinates (1, 2, 3) and (10, 10, 10): μ = (2, 10), σ (unbiased) = (1, 0)
    benign = t([[1, 10], [2, 10], [3, 10]])
    own = t([[0, 0], [5, 5]])
    z = NormalDist().inv_cdf((5 - (math.floor(5 / 2 + 1) - 2)) / 5)  # n = 5, f = 2: s = 1, Φ⁻¹(0.8)
    out = build_attack("alie").attack(benign, own)
    assert torch.allclose(out, t([[2 - z, 10], [2 - z, 10]]), atol=1e-6)
    out = build_attack("alie", z=1.5, sign=1).attack(benign, own)
    assert torch.allclose(out, t([[3.5, 10]] * 2))
    # full_with_own: the reference is benign + own rows
    ref = torch.cat([benign, own]).double()
    want = (ref.mean(0) - 1.0 * ref.std(0)).float()
    assert torch.allclose(build_attack("alie", z=1.0, knowledge="full_with_own").attack(benign, own), want.expand(2, -1))
    # partial: only the attackers' own rows
    want = (own.mean(0) - own.std(0))
    assert torch.allclose(build_attack("alie", z=1.0, knowledge="partial").attack(benign, own), want.expand(2, -1))


def test_alie_bad_input():
    for kwargs, key in (({"z": math.nan}, "z"), ({"z": "1"}, "z"), ({"sign": 0}, "sign"), ({"sign": True}, "sign"),
                        ({"knowledge": "none"}, "knowledge")):
        with pytest.raises(ValueError, match=key):
            build_attack("alie", **kwargs)
    with pytest.raises(ValueError, match="at least 2 reference updates"):
        build_attack("alie").attack(t([[1.0, 2.0]]), t([[0.0, 1.0]]))


# ------------------------------------------------------------------------------ IPM

def test_ipm_hand_computed_and_negative_inner_product():
    benign = t([[1, 2], [3, 4], [5, 0]])  # mean (3, 2)
    own = t([[9, 9], [8, 8]])
    assert torch.allclose(build_attack("ipm", epsilon=0.5).attack(benign, own), t([[-1.5, -1.0]] * 2))
    # full_with_own: mean of 5 rows = (26/5, 23/5)
    assert torch.allclose(build_attack("ipm", epsilon=1.0, knowledge="full_with_own").attack(benign, own),
                          t([[-5.2, -4.6]] * 2))
    assert torch.allclose(build_attack("ipm", epsilon=1.0, knowledge="partial").attack(benign, own), t([[-8.5, -8.5]] * 2))
    # ε > k/f turns the mean's inner product with the benign mean negative (k = 3, f = 2: ε > 1.5)
    for eps, sign in ((1.0, 1), (2.0, -1)):
        poisoned = build_attack("ipm", epsilon=eps).attack(benign, own)
        agg = torch.cat([benign, poisoned]).mean(0)
        assert math.copysign(1, float(agg @ benign.mean(0))) == sign


def test_ipm_bad_input():
    for eps in (0, -1.0, math.inf, "2", True):
        with pytest.raises(ValueError, match="epsilon"):
            build_attack("ipm", epsilon=eps)
    with pytest.raises(ValueError, match="knowledge"):
        build_attack("ipm", knowledge="all")
