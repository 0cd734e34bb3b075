"""Baseline rules (FedAvg, Multi-Krum, Median, Zeno, FLTrust, DnC): hand-computed cases, plain-loop
float64 references, properties and bad input. Expected numbers are worked out in the comments or by
independent plain-Python/numpy references, never by the code under test."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedml_heterofl.defense import REGISTRY, RoundContext, build_defense
from fedml_heterofl.defense.dnc import DnC
from fedml_heterofl.defense.fedavg import FedAvg
from fedml_heterofl.defense.fltrust import FLTrust
from fedml_heterofl.defense.gram import sq_distances_from_gram
from fedml_heterofl.defense.median import Median, coordinate_median
from fedml_heterofl.defense.multikrum import MultiKrum, order_by_score
from fedml_heterofl.defense.rows import gram_matrix
from fedml_heterofl.defense.zeno import Zeno

RULES = ("fedavg", "multikrum", "median", "zeno", "fltrust", "dnc")


def linear_loss(params, batch):
    """Per-row mean squared error of a linear model: params (k, d), x (B, d), y (B,) -> (k,)."""
    x, y = batch
    return ((params @ x.T - y) ** 2).mean(dim=1)


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


# ------------------------------------------------------------------------------ registry / contracts

def test_all_registered_with_requires():
    assert set(RULES) <= set(REGISTRY)
    assert FedAvg().requires == ("sample_counts",)
    assert FedAvg(weighted=False).requires == ()
    assert MultiKrum(f=1).requires == () and Median().requires == () and DnC(f=1).requires == ()
    assert set(Zeno(b=1).requires) == {"loss_fn", "validation_batch", "global_params"}
    assert FLTrust().requires == ("server_update",)
    assert MultiKrum.honest_majority and Median.honest_majority and DnC.honest_majority
    assert not FedAvg.honest_majority and not FLTrust.honest_majority


# ------------------------------------------------------------------------------ FedAvg

def test_fedavg_hand_computed():
    # rows (1,0), (0,1), (3,3) with counts 1, 1, 2 -> weights .25, .25, .5
    # Δ = (.25 + 1.5, .25 + 1.5) = (1.75, 1.75); plain mean = (4/3, 4/3)
    U = t([[1, 0], [0, 1], [3, 3]])
    ctx = RoundContext(sample_counts=torch.tensor([1, 1, 2]))
    res = FedAvg()(U, ctx)
    assert torch.allclose(res.weights, t([0.25, 0.25, 0.5]))
    assert torch.allclose(res.update, t([1.75, 1.75]))
    assert torch.allclose(FedAvg(weighted=False)(U, ctx).update, t([4 / 3, 4 / 3]))
    # no counts -> plain mean
    assert torch.allclose(FedAvg()(U, RoundContext()).update, t([4 / 3, 4 / 3]))
    assert res.kept.all()


def test_fedavg_bad_counts():
    U = t([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="sample_counts"):
        FedAvg()(U, RoundContext(sample_counts=torch.tensor([1, 2, 3])))
    with pytest.raises(ValueError, match="sample_counts"):
        FedAvg()(U, RoundContext(sample_counts=torch.tensor([1, -2])))
    with pytest.raises(ValueError, match="weighted"):
        FedAvg(weighted="yes")


# ------------------------------------------------------------------------------ Multi-Krum

# Points on a line (x, 1) with x = 1, 2, 3, 4, 10; n = 5, f = 1 -> n - f - 2 = 2 neighbours.
# squared distances (x only): row0: 1,4,9,81 -> 1+4 = 5;  row1: 1,1,4,64 -> 2;  row2: 4,1,1,49 -> 2
#                             row3: 9,4,1,36 -> 1+4 = 5;  row4: 81,64,49,36 -> 36+49 = 85
KRUM_U = [[1, 1], [2, 1], [3, 1], [4, 1], [10, 1]]


def test_multikrum_hand_computed_static():
    U = t(KRUM_U)
    res = MultiKrum(f=1)(U)  # m = n - f = 4: rows 0..3, mean x = 2.5
    assert torch.allclose(res.scores["krum"], t([5, 2, 2, 5, 85]))
    assert res.kept.tolist() == [True, True, True, True, False]
    assert res.removed_by["multikrum"].tolist() == [4]
    assert torch.allclose(res.update, t([2.5, 1]))
    # m = 3: scores 2, 2, then the tie 5 (row 0) / 5 (row 3) goes to the lower client id -> rows 0, 1, 2
    res3 = MultiKrum(f=1, m=3)(U)
    assert res3.kept.tolist() == [True, True, True, False, False]
    assert torch.allclose(res3.update, t([2, 1]))
    # with client ids reversed, the tie goes to row 3 (id 1 < id 4)
    res3r = MultiKrum(f=1, m=3)(U, RoundContext(client_ids=torch.tensor([4, 3, 2, 1, 0])))
    assert res3r.kept.tolist() == [False, True, True, True, False]
    # Krum (m = 1): lowest score 2 at rows 1 and 2 -> row 1 (lower id)
    assert MultiKrum(f=1, m=1)(U).kept.tolist() == [False, True, False, False, False]


def test_multikrum_hand_computed_iterative():
    # x = 0, 1, 2, 5, 6, 30 (second coordinate 1), n = 6, f = 1, m = 3.
    # pass 1 (r=6, k=3): row0: 1+4+25 = 30; row1: 1+1+16 = 18; row2: 4+1+9 = 14; row3: 1+9+16 = 26;
    #                    row4: 1+16+25 = 42; row5: 576+... large -> pick row 2 (x=2)
    # pass 2 (r=5, k=2) over x = 0, 1, 5, 6, 30: row0: 1+25 = 26; row1: 1+16 = 17; row3: 1+16 = 17;
    #                    row4: 1+25 = 26 -> tie 17 -> row 1 (lower id)
    # pass 3 (r=4, k=1) over x = 0, 5, 6, 30: row0: 25; row3: 1; row4: 1 -> row 3
    # selected {1, 2, 3}: mean x = (1 + 2 + 5)/3 = 8/3.  Static keeps the 3 lowest of pass 1: rows
    # 2 (14), 1 (18), 3 (26) -> the same set here; with m = 4 static adds row 0 (30) while
    # iterative pass 4 (r=3, k=min(1, 2)=1) over x = 0, 6, 30: row0: 36, row4: 36 -> row 0 as well.
    U = t([[0.0, 1], [1, 1], [2, 1], [5, 1], [6, 1], [30, 1]])
    res = MultiKrum(f=1, m=3, variant="iterative")(U)
    assert res.kept.tolist() == [False, True, True, True, False, False]
    assert torch.allclose(res.update, t([8 / 3, 1]))
    assert torch.allclose(res.scores["krum"][:5], t([30, 18, 14, 26, 42]))
    # a case where the variants differ: x = 1, 6, 8, 12, 13, 15, n = 6, f = 1, m = 2
    # pass 1 (k=3): row0: 25+49+121 = 195; row1: 4+25+36 = 65; row2: 4+16+25 = 45; row3: 1+9+16 = 26;
    #               row4: 1+4+25 = 30; row5: 4+9+49 = 62 -> static keeps rows 3, 4
    # iterative picks row 3, then (r=5, k=2) over x = 1, 6, 8, 13, 15: row0: 25+49 = 74;
    #   row1: 4+25 = 29; row2: 4+25 = 29; row4: 4+25 = 29; row5: 4+49 = 53 -> three-way tie -> row 1
    U2 = t([[1.0, 1], [6, 1], [8, 1], [12, 1], [13, 1], [15, 1]])
    assert MultiKrum(f=1, m=2)(U2).kept.nonzero().flatten().tolist() == [3, 4]
    res2 = MultiKrum(f=1, m=2, variant="iterative")(U2)
    assert res2.kept.nonzero().flatten().tolist() == [1, 3]
    assert torch.equal(res2.scores["krum"], t([195, 65, 45, 26, 30, 62]))
    assert torch.allclose(res2.update, t([9, 1]))


def krum_scores_loop(U, f, alive):
    """Plain float64 loop: Krum score of every alive row over the other alive rows."""
    A = [list(map(float, U[i].double())) for i in range(U.shape[0])]
    r = len(alive)
    k = r - f - 2 if r - f - 2 >= 1 else min(1, r - 1)
    out = {}
    for i in alive:
        dists = sorted(sum((a - b) ** 2 for a, b in zip(A[i], A[j])) for j in alive if j != i)
        out[i] = sum(dists[:k])
    return out


def multikrum_loop(U, f, m, variant):
    n = U.shape[0]
    if variant == "static":
        s = krum_scores_loop(U, f, list(range(n)))
        return sorted(sorted(s, key=lambda i: (s[i], i))[:m]), s
    alive, chosen, first = list(range(n)), [], None
    while len(chosen) < m:
        s = krum_scores_loop(U, f, alive)
        first = first or s
        best = min(alive, key=lambda i: (s[i], i))
        chosen.append(best)
        alive.remove(best)
    return sorted(chosen), first


def near_duplicates(seed, n=14, n_dup=7, d=40, dup_noise=1e-2):
    """Rows 0..n_dup-1: one base of norm ~1e3 plus tiny noise (sybils); the rest: base + noise 1.

    The near-duplicates' squared distances are ~ d·2·dup_noise² = 8e-3 while ‖base‖² ~ 1e6: a
    float32 Gram matrix (relative error ~6e-8 -> absolute ~0.06) cannot resolve them, float64 can.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    base = base / base.norm() * 1e3
    U = base + torch.randn(n, d, generator=g, dtype=torch.float64)
    U[:n_dup] = base + dup_noise * torch.randn(n_dup, d, generator=g, dtype=torch.float64)
    return U.float()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("variant", ["static", "iterative"])
def test_multikrum_matches_float64_loop_on_near_duplicates(seed, variant):
    U = near_duplicates(seed)
    f, m = 3, 4
    expected, scores = multikrum_loop(U, f, m, variant)
    res = MultiKrum(f=f, m=m, variant=variant)(U)
    assert res.kept.nonzero().flatten().tolist() == expected
    ref = torch.tensor([scores[i] for i in range(U.shape[0])], dtype=torch.float64)
    assert torch.allclose(res.scores["krum"].double(), ref, rtol=1e-5, atol=1e-6)
    # ... and the float32 Gram matrix really is wrong at this scale (why the rule uses float64).
    D32 = sq_distances_from_gram(gram_matrix(U))[:7, :7].double()
    D_ref = torch.tensor([[sum((float(a) - float(b)) ** 2 for a, b in zip(U[i].double(), U[j].double()))
                           for j in range(7)] for i in range(7)], dtype=torch.float64)
    assert (D32 - D_ref).abs().max() > 0.1 * D_ref.max()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("variant", ["static", "iterative"])
def test_multikrum_matches_loop_on_random_inputs(seed, variant):
    g = torch.Generator().manual_seed(100 + seed)
    U = torch.randn(11, 6, generator=g)
    U[8:] += 3.0  # three outliers
    expected, _ = multikrum_loop(U, 2, 5, variant)
    assert MultiKrum(f=2, m=5, variant=variant)(U).kept.nonzero().flatten().tolist() == expected


def test_multikrum_bad_input():
    with pytest.raises(ValueError) as exc:
        MultiKrum(f=1)(torch.randn(4, 3))
    assert "n=4" in str(exc.value) and "f=1" in str(exc.value)
    with pytest.raises(ValueError, match="f must"):
        MultiKrum(f=-1)
    with pytest.raises(ValueError, match="variant"):
        MultiKrum(f=1, variant="foo")
    with pytest.raises(ValueError, match="m must"):
        MultiKrum(f=1, m=0)
    with pytest.raises(ValueError, match="m=9"):
        MultiKrum(f=1, m=9)(torch.randn(5, 3))
    with pytest.raises(TypeError):
        MultiKrum()  # f is required
    with pytest.raises(TypeError):
        build_defense("multikrum")


# ------------------------------------------------------------------------------ Median

def test_median_hand_computed():
    # odd: column 0 = 1, 2, 10 -> 2; column 1 = 5, -1, 0 -> 0
    U = t([[1, 5], [2, -1], [10, 0]])
    res = Median()(U)
    assert torch.equal(res.update, t([2, 0]))
    assert res.kept.all() and res.weights is None
    # even: add (4, 100): column 0 sorted 1, 2, 4, 10 -> (2+4)/2 = 3; column 1 -1, 0, 5, 100 -> 2.5
    res = Median()(t([[1, 5], [2, -1], [10, 0], [4, 100]]))
    assert torch.equal(res.update, t([3, 2.5]))


@settings(max_examples=20, deadline=None)
@given(half=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_median_even_n_is_mean_of_two_middles(half, d, seed):
    n = 2 * half
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    expected = []
    for k in range(d):
        col = sorted(float(U[i, k]) for i in range(n))
        expected.append((col[half - 1] + col[half]) / 2)
    assert torch.allclose(Median()(U).update.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_median_large_n_matches_numpy():
    U = torch.randn(1001, 10, generator=torch.Generator().manual_seed(3))
    assert np.allclose(Median()(U).update.numpy(), np.median(U.numpy(), axis=0))
    # chunked columns give the same result
    V = torch.randn(6, 50, generator=torch.Generator().manual_seed(4))
    assert np.allclose(coordinate_median(V, chunk=7).numpy(), np.median(V.numpy(), axis=0))


# ------------------------------------------------------------------------------ Zeno

def zeno_ctx(rho_batch=None):
    # d = 1, x = [[1]], y = [1], w_t = 0: L(w) = (w - 1)², L(w_t) = 1
    x, y = t([[1.0]]), t([1.0])
    return RoundContext(global_params=t([0.0]), loss_fn=linear_loss, validation_batch=(x, y))


def test_zeno_hand_computed():
    # updates g = 1, 0.5, -1, 2 -> L(w_t + g) = 0, .25, 4, 1
    # rho = 0.1: score = 1 - L - 0.1 g² = 0.9, 0.725, -3.1, -0.4
    # b = 1 drops row 2 (g = -1 increases the loss) -> mean (1 + .5 + 2)/3 = 7/6
    U = t([[1.0], [0.5], [-1.0], [2.0]])
    res = Zeno(b=1, rho=0.1)(U, zeno_ctx())
    assert torch.allclose(res.scores["zeno"], t([0.9, 0.725, -3.1, -0.4]))
    assert res.kept.tolist() == [True, True, False, True]
    assert res.removed_by["zeno"].tolist() == [2]
    assert torch.allclose(res.update, t([7 / 6]))
    # b = 2 also drops row 3 (-0.4) -> mean (1 + .5)/2 = .75; chunk=2 splits the loss calls
    res = Zeno(b=2, rho=0.1, chunk=2)(U, zeno_ctx())
    assert res.kept.tolist() == [True, True, False, False]
    assert torch.allclose(res.update, t([0.75]))


def test_zeno_drops_loss_increasing_update_in_linear_regression():
    g = torch.Generator().manual_seed(0)
    d = 5
    w_star = torch.randn(d, generator=g)
    x = torch.randn(64, d, generator=g)
    y = x @ w_star
    w_t = torch.zeros(d)
    honest = (w_star - w_t) * 0.3 + 0.01 * torch.randn(6, d, generator=g)  # steps towards w*
    bad = -(w_star - w_t) * 0.3  # a step away from w*: increases the loss
    U = torch.cat([honest, bad[None]])
    ctx = RoundContext(global_params=w_t, loss_fn=linear_loss, validation_batch=(x, y))
    res = Zeno(b=1)(U, ctx)
    assert res.kept.tolist() == [True] * 6 + [False]
    assert torch.allclose(res.update, honest.mean(0), atol=1e-6)
    # the loss really increases for the bad update: L(w_t) < L(w_t + bad)
    assert float(linear_loss((w_t + bad)[None], (x, y))[0]) > float(linear_loss(w_t[None], (x, y))[0])


def test_zeno_bad_input():
    U = t([[1.0], [0.5]])
    with pytest.raises(ValueError, match="b=2"):
        Zeno(b=2)(U, zeno_ctx())
    with pytest.raises(ValueError, match="b must"):
        Zeno(b=-1)
    with pytest.raises(ValueError, match="rho"):
        Zeno(b=1, rho=-1.0)
    with pytest.raises(ValueError, match="chunk"):
        Zeno(b=1, chunk=0)
    with pytest.raises(ValueError, match="loss_fn"):
        Zeno(b=1)(U, RoundContext())


# ------------------------------------------------------------------------------ FLTrust

def test_fltrust_hand_computed():
    # g0 = (1, 0). a = (2, 0): cos 1, ĝ = (1, 0). b = (1, 1): cos 1/√2, ĝ = (1, 1)/√2.
    # c = (-1, 0): cos -1 -> trust 0, removed.  ΣTS = 1 + 1/√2 = 1.70711
    # Δ = ((1, 0) + (1/√2)(1/√2, 1/√2)) / 1.70711 = (1.5, 0.5) / 1.70711 = (0.87868, 0.29289)
    # weights: a: 1·1/2/1.70711 = 0.29289; b: (1/√2)·1/√2/1.70711 = 0.29289; c: 0
    U = t([[2, 0], [1, 1], [-1, 0]])
    res = FLTrust()(U, RoundContext(server_update=t([1, 0])))
    r = 1 / math.sqrt(2)
    assert torch.allclose(res.scores["trust"], t([1, r, 0]))
    assert res.kept.tolist() == [True, True, False]
    assert res.removed_by["fltrust"].tolist() == [2]
    assert torch.allclose(res.weights, t([0.29289, 0.29289, 0]), atol=1e-5)
    assert torch.allclose(res.update, t([0.87868, 0.29289]), atol=1e-5)


def test_fltrust_opposite_removed_and_scaled_copy_rescaled():
    g = torch.Generator().manual_seed(1)
    g0 = torch.randn(20, generator=g)
    U = torch.stack([100 * g0, -g0])
    res = FLTrust()(U, RoundContext(server_update=g0))
    assert res.kept.tolist() == [True, False]
    assert float(res.scores["trust"][1]) == 0.0
    # the only trusted update is 100·g0 with trust 1 -> rescaled to ‖g0‖ -> Δ = g0
    assert torch.allclose(res.update, g0, atol=1e-5)
    # among other updates, the ×100 copy contributes TS·ĝ with ‖ĝ‖ = ‖g0‖
    V = torch.cat([U, torch.randn(3, 20, generator=g) + g0])
    res = FLTrust()(V, RoundContext(server_update=g0))
    trust_sum = float(res.scores["trust"].sum())
    contribution = res.weights[0] * V[0] * trust_sum  # = TS_0 · ĝ_0 with TS_0 = 1
    assert math.isclose(float(contribution.norm()), float(g0.norm()), rel_tol=1e-5)
    assert not res.kept[1]


def test_fltrust_all_opposite_and_bad_server_update():
    U = t([[-1, 0], [0, -1]])
    res = FLTrust()(U, RoundContext(server_update=t([1, 1])))
    assert not res.kept.any() and torch.equal(res.update, t([0, 0]))
    assert res.diagnostics.get("all_removed")
    with pytest.raises(ValueError, match="server_update"):
        FLTrust()(U, RoundContext())
    with pytest.raises(ValueError, match="d=2"):
        FLTrust()(U, RoundContext(server_update=t([1, 1, 1])))
    # zero server update: every rescaled update is zero -> all removed, zero aggregate
    res = FLTrust()(U, RoundContext(server_update=t([0, 0])))
    assert not res.kept.any() and torch.equal(res.update, t([0, 0]))
    # a non-finite server update (diverged server training) trusts nobody either
    res = FLTrust()(t([[1, 0], [0, 1]]), RoundContext(server_update=t([float("nan"), 1])))
    assert not res.kept.any() and torch.equal(res.update, t([0, 0]))
    assert res.diagnostics["non_finite_server_update"] and res.diagnostics["all_removed"]


# ------------------------------------------------------------------------------ DnC

def test_dnc_hand_computed():
    # rows (1,1), (-1,1), (0,1), (6,1); d = 2 <= b so all coordinates are used.
    # mean (1.5, 1); centred x = -.5, -2.5, -1.5, 4.5, y = 0 -> top singular vector ±(1, 0)
    # scores = x² = .25, 6.25, 2.25, 20.25. f = 1, c = 1 removes row 3 -> mean of rows 0..2 = (0, 1)
    U = t([[1, 1], [-1, 1], [0, 1], [6, 1]])
    res = DnC(f=1)(U)
    assert torch.allclose(res.scores["dnc"], t([0.25, 6.25, 2.25, 20.25]), atol=1e-5)
    assert res.kept.tolist() == [True, True, True, False]
    assert res.removed_by["dnc"].tolist() == [3]
    assert torch.allclose(res.update, t([0, 1]), atol=1e-6)
    # c = 2: floor(2·1) = 2 removed per iteration -> rows 3 and 1 -> mean of (1,1), (0,1) = (.5, 1)
    res = DnC(f=1, c=2.0)(U)
    assert res.kept.tolist() == [True, False, True, False]
    assert torch.allclose(res.update, t([0.5, 1]), atol=1e-6)
    # c = 1.5: floor(1.5) = 1 removed
    assert DnC(f=1, c=1.5)(U).kept.tolist() == [True, True, True, False]


def dnc_loop(U, f, c, niters, b, seed):
    """Independent reference: same coordinate draws, plain loops for the mean and the projections,
    numpy ``eigh`` of the b×b scatter matrix for the principal direction."""
    n, d = U.shape
    gen = torch.Generator().manual_seed(seed)
    keep = set(range(n))
    n_remove = int(math.floor(c * f + 1e-9))
    all_scores = []
    for _ in range(niters):
        coords = torch.randperm(d, generator=gen)[:b].tolist() if b < d else list(range(d))
        rows = [[float(U[i, k]) for k in coords] for i in range(n)]
        mu = [sum(rows[i][j] for i in range(n)) / n for j in range(len(coords))]
        cen = np.array([[rows[i][j] - mu[j] for j in range(len(coords))] for i in range(n)])
        _, vecs = np.linalg.eigh(cen.T @ cen)
        v = vecs[:, -1]
        s = [sum(cen[i, j] * v[j] for j in range(len(coords))) ** 2 for i in range(n)]
        all_scores.append(s)
        good = sorted(range(n), key=lambda i: (s[i], i))[: n - n_remove]
        keep &= set(good)
    return sorted(keep), all_scores


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("near_dup", [False, True])
def test_dnc_matches_reference(seed, near_dup):
    if near_dup:
        U = near_duplicates(seed, n=12, n_dup=5, d=30)
        U[9:] += 5.0  # three outliers on top
    else:
        g = torch.Generator().manual_seed(seed)
        U = torch.randn(12, 30, generator=g)
        U[9:] += 2.0
    expected, scores = dnc_loop(U, 3, 1.0, 2, 12, seed=7)
    res = DnC(f=3, niters=2, subsample_dim=12)(U, RoundContext(generator=torch.Generator().manual_seed(7)))
    assert res.kept.nonzero().flatten().tolist() == expected
    ref = torch.tensor(scores, dtype=torch.float64).max(dim=0).values
    assert torch.allclose(res.scores["dnc"].double(), ref, rtol=1e-4, atol=1e-4 * float(ref.max()))


def test_order_by_score_compares_at_a_resolution():
    one = 1.0
    ulps = math.nextafter(math.nextafter(one, 2.0), 2.0)  # 1 + 2 ulps
    scores = torch.tensor([ulps, one, 0.5, math.inf], dtype=torch.float64)
    ids = torch.tensor([2, 5, 9, 0])
    # 1 and 1 + 2 ulps tie and go by client id (2 before 5); +inf stays last
    assert order_by_score(scores, ids).tolist() == [2, 0, 1, 3]
    # without the resolution the ulps would decide: rows 1 (id 5) then 0 (id 2)
    assert order_by_score(scores, ids, resolution=0.0 + 1e-300).tolist() == [2, 1, 0, 3]
    # a real difference (1e-6 relative) is kept
    assert order_by_score(torch.tensor([1.000001, 1.0], dtype=torch.float64), torch.tensor([0, 1])).tolist() == [1, 0]


def test_dnc_identical_rows_tie_by_client_id(monkeypatch):
    """The issue's case: 6 identical attacker rows among n = 30 (d = 2000, no sub-sampling), DnC
    removing 3 (f = 3): which duplicates go is decided by client id (the highest ids among the tied
    highest scores), also when the scores of the identical rows come out a few ulps apart (as a matrix
    product may return them; injected here)."""
    import fedml_heterofl.defense.dnc as dnc_module

    g = torch.Generator().manual_seed(0)
    U = (0.3 + torch.randn(30, 2000, generator=g)) * torch.rand(30, 1, generator=g)
    dup = torch.tensor([3, 8, 11, 17, 22, 29])
    U[dup] = -3 * U.mean(0)
    ids = torch.randperm(30, generator=g) + 100
    real = dnc_module.dnc_scores

    def noisy(sub):
        s = real(sub)
        return s * (1 + torch.arange(30, dtype=torch.float64).flip(0) * 2.3e-16)  # a few ulps, against the ids

    monkeypatch.setattr(dnc_module, "dnc_scores", noisy)
    res = DnC(f=3, subsample_dim=2000)(U, RoundContext(client_ids=ids))
    # the 6 duplicates have the highest scores; the 3 with the highest client ids are removed
    expected = dup[torch.argsort(ids[dup])][3:]
    assert sorted(res.removed_by["dnc"].tolist()) == sorted(expected.tolist())


def test_dnc_bad_input():
    with pytest.raises(ValueError, match="f must"):
        DnC(f=-1)
    with pytest.raises(ValueError, match="c must"):
        DnC(f=1, c=-0.5)
    with pytest.raises(ValueError, match="niters"):
        DnC(f=1, niters=0)
    with pytest.raises(ValueError, match="subsample_dim"):
        DnC(f=1, subsample_dim=0)
    with pytest.raises(ValueError) as exc:
        DnC(f=3)(torch.randn(3, 4))
    assert "n=3" in str(exc.value) and "f=3" in str(exc.value)


# ------------------------------------------------------------------------------ all rules

def make_rule(name, n):
    f = 1
    return {
        "fedavg": lambda: FedAvg(),
        "multikrum": lambda: MultiKrum(f=f, m=max(1, n - 2)),
        "median": lambda: Median(),
        "zeno": lambda: Zeno(b=f, rho=1e-3),
        "fltrust": lambda: FLTrust(),
        "dnc": lambda: DnC(f=f, niters=2, subsample_dim=3),
    }[name]()


def make_ctx(U, seed, ids=None, counts=None):
    g = torch.Generator().manual_seed(seed + 1)
    d = U.shape[1]
    x = torch.randn(16, d, generator=g)
    y = x @ torch.randn(d, generator=g)
    return RoundContext(
        global_params=torch.zeros(d), loss_fn=linear_loss, validation_batch=(x, y),
        server_update=torch.randn(d, generator=g) + 0.5, sample_counts=counts, client_ids=ids,
        generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", RULES)
@settings(max_examples=20, deadline=None)
@given(n=st.integers(5, 10), d=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_permuting_clients_permutes_kept(name, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, d, generator=g) + 0.3
    counts = torch.randint(1, 50, (n,), generator=g)
    perm = torch.randperm(n, generator=g)
    rule = make_rule(name, n)
    res = rule(U, make_ctx(U, seed, counts=counts))
    res_p = rule(U[perm], make_ctx(U, seed, ids=perm, counts=counts[perm]))
    assert torch.equal(res_p.kept, res.kept[perm])
    assert torch.allclose(res_p.update, res.update, atol=1e-5)


@pytest.mark.parametrize("name", RULES)
@settings(max_examples=20, deadline=None)
@given(n=st.integers(5, 10), d=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_identical_updates_give_that_update(name, n, d, seed):
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    U = v.repeat(n, 1)
    ctx = make_ctx(U, seed, counts=torch.arange(1, n + 1))
    ctx.server_update = v.clone()  # FLTrust rescales every update to ‖g0‖, so g0 must have v's norm
    res = make_rule(name, n)(U, ctx)
    assert torch.allclose(res.update, v, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 10), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_multikrum_m_equals_n_is_plain_fedavg(n, d, seed):
    U = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    ctx = RoundContext(sample_counts=torch.arange(1, n + 1))
    f = (n - 3) // 2
    for variant in ("static", "iterative"):
        res = MultiKrum(f=f, m=n, variant=variant)(U, ctx)
        assert res.kept.all()
        assert torch.allclose(res.update, FedAvg(weighted=False)(U, ctx).update, atol=1e-6)


@pytest.mark.parametrize("name", RULES)
def test_nan_rows_removed_by_base(name):
    g = torch.Generator().manual_seed(5)
    U = torch.randn(8, 4, generator=g) + 0.5
    U[2, 1] = float("nan")
    U[6, 0] = float("inf")
    ctx = make_ctx(U, 0, counts=torch.arange(1, 9))
    res = make_rule(name, 7)(U, ctx)
    assert res.removed_by["non_finite"].tolist() == [2, 6]
    assert not res.kept[2] and not res.kept[6]
    assert torch.isfinite(res.update).all()
    # same result as calling on the clean rows alone (ids follow the rows)
    clean = [0, 1, 3, 4, 5, 7]
    ref = make_rule(name, 7)(U[clean], make_ctx(U, 0, ids=torch.tensor(clean), counts=torch.arange(1, 9)[clean]))
    assert torch.allclose(res.update, ref.update, atol=1e-6)
    assert torch.equal(res.kept[clean], ref.kept)


def test_huge_finite_rows_do_not_break_scores():
    # 3e30 is finite in float32 but its float32 squared norm overflows; the base class keeps it.
    U = torch.tensor([[1.0, 0.0], [0.9, 0.1], [3e30, 3e30], [1.1, 0.0], [1.0, 0.1]])
    # FLTrust: cos((3e30, 3e30), (1, 0)) = 1/√2 > 0 -> kept, rescaled to ‖g0‖ = 1 (weight finite)
    res = FLTrust()(U, RoundContext(server_update=torch.tensor([1.0, 0.0])))
    assert math.isclose(float(res.scores["trust"][2]), 1 / math.sqrt(2), rel_tol=1e-6)
    assert torch.isfinite(res.update).all()
    # Multi-Krum (float64 distances) and DnC drop it
    assert not MultiKrum(f=1)(U).kept[2]
    assert not DnC(f=1)(U).kept[2]
    # Zeno: a NaN/inf loss or norm is the worst score, so it is dropped
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])
    ctx = RoundContext(global_params=torch.zeros(2), loss_fn=linear_loss, validation_batch=(x, y))
    assert Zeno(b=1)(U, ctx).kept.tolist() == [True, True, False, True, True]
