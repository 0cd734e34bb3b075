"""HeteroFL (Alg. 1-6): hand-computed cases, plain-loop references, crafted scenarios, properties."""
import math

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from fedml_heterofl.defense.base import RoundContext
from fedml_heterofl.defense.heterofl import (
    _client_keys,
    HeteroFL,
    estimate_bandwidth,
    magnitude_rectification,
    mean_shift_labels,
    relative_cosine_similarity,
    score_bandwidth,
    similarity_detection,
    sybil_direction_removal,
    watermark_verification,
)
from fedml_heterofl.defense.rows import gram_matrix
from fedml_heterofl.models import ParamLayout, batched_loss

E = torch.eye(8, dtype=torch.float32)


def cos_matrix(U):
    return torch.nn.functional.normalize(U, dim=1) @ torch.nn.functional.normalize(U, dim=1).T


def rcs_loop(U, exclude_self=True):
    """Plain float64 loop over Alg. 3 for RCS(C, C)."""
    U = U.double()
    n = U.shape[0]
    out = []
    for i in range(n):
        sims = []
        for j in range(n):
            if exclude_self and i == j:
                continue
            sims.append(float(U[i] @ U[j] / (U[i].norm() * U[j].norm())))
        k = min(n // 2, len(sims))
        out.append(sum(sorted(sims, reverse=True)[:k]))
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------ Alg. 3

def test_rcs_hand_computed():
    # a=(1,0) b=(0,1) c=(1,1) e=(-1,0); k = floor(4/2) = 2 most similar others.
    # cos: ab 0, ac .7071, ae -1, bc .7071, be 0, ce -.7071
    # s_a = .7071 + 0, s_b = .7071 + 0, s_c = .7071 + .7071, s_e = 0 + (-.7071)
    U = torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0]])
    r = math.sqrt(0.5)
    s = relative_cosine_similarity(cos_matrix(U), torch.arange(4))
    assert torch.allclose(s, torch.tensor([r, r, 2 * r, -r]), atol=1e-6)
    # Self included: each row gains its own cosine 1 and drops its second-best other.
    # s_a = 1 + .7071, s_b = 1 + .7071, s_c = 1 + .7071, s_e = 1 + 0
    s_incl = relative_cosine_similarity(cos_matrix(U))
    assert torch.allclose(s_incl, torch.tensor([1 + r, 1 + r, 1 + r, 1.0]), atol=1e-6)


def test_rcs_rectangular_against_subset():
    # RCS(C1, C2) with C2 = rows {0, 2} of C1 and self excluded equals RCS(C1, C1) on those rows.
    U = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    cos = cos_matrix(U)
    full = relative_cosine_similarity(cos, torch.arange(7))
    sub = relative_cosine_similarity(cos[[0, 2]], torch.tensor([0, 2]))
    assert torch.allclose(sub, full[[0, 2]])


@pytest.mark.parametrize("seed", range(4))
def test_rcs_from_float32_gram_matches_float64_loop(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(30, 2000, generator=g)
    # near-duplicates: rows 20..29 are row 0 plus 1e-4 relative noise
    base[20:] = base[0] + 1e-4 * torch.randn(10, 2000, generator=g)
    from fedml_heterofl.defense.gram import cosine_from_gram
    s = relative_cosine_similarity(cosine_from_gram(gram_matrix(base)), torch.arange(30))
    assert torch.allclose(s.double(), rcs_loop(base), atol=1e-4)


# ------------------------------------------------------------------------------ Step 1, Alg. 2

def test_sybil_direction_removal_hand_computed():
    # 4 identical sybils along e0; 6 honest h_i = 3 e_{i+1} + e_7, so cos(h_i, h_j) = 1/10 = 0.1,
    # cos(sybil, honest) = 0, cos(sybil, sybil) = 1. n = 10, k = 5.
    # s_sybil = 1+1+1 + 0+0 = 3;  s_honest = 5 x 0.1 = 0.5.
    # median(s) = 0.5 (6 of 10 values are 0.5), MAD = median(|s - 0.5|) = 0 -> bound 2(0.5+0) = 1.
    # The sybils (3 > 1) are removed, the honest (0.5) are not.
    sybils = E[0].repeat(4, 1)
    honest = torch.stack([3 * E[i + 1] + E[7] for i in range(6)])
    res = sybil_direction_removal(gram_matrix(torch.cat([sybils, honest])))
    assert res.malicious.tolist() == [True] * 4 + [False] * 6
    assert res.diagnostics["threshold"] == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(res.scores, torch.tensor([3.0] * 4 + [0.5] * 6), atol=1e-6)


def test_sybil_bound_is_strict():
    # Unit vectors with this cosine matrix (positive semi-definite: blocks {0, 1, 4} and {2, 3}):
    # RCS (k = 2, self excluded): rows 0-3 -> 0.5 + 0 = 0.5, row 4 -> 0.5 + 0.5 = 1.
    # median 0.5, MAD median(0, 0, 0, 0, 0.5) = 0, bound 2 (0.5 + 0) = 1: s_4 = 1 is not > 1, kept.
    C = torch.tensor([[1, 0, 0, 0, .5], [0, 1, 0, 0, .5], [0, 0, 1, .5, 0], [0, 0, .5, 1, 0], [.5, .5, 0, 0, 1]],
                     dtype=torch.float64)
    res = sybil_direction_removal(C)
    assert res.scores.tolist() == [0.5, 0.5, 0.5, 0.5, 1.0] and res.diagnostics["threshold"] == 1.0
    assert not res.malicious.any()
    # a factor a hair below 2 puts the bound (0.9995) below s_4: removed
    assert sybil_direction_removal(C, factor=1.999).malicious.tolist() == [False] * 4 + [True]


def test_sybil_bound_adds_the_mad_loop_reference():
    """Step 1 against plain loops on a round with MAD > 0 where some score lies between 2(s̃ − r̃)
    and 2(s̃ + r̃): only the + bound keeps it (Alg. 2 line 5)."""
    g = torch.Generator().manual_seed(3)
    shared = torch.randn(30, generator=g)
    U = shared + 1.5 * torch.randn(12, 30, generator=g)
    U[:3] = shared + 0.3 * torch.randn(3, 30, generator=g)  # three close to the common direction
    s = rcs_loop(U).tolist()
    med = sorted(s)[5:7]
    med = (med[0] + med[1]) / 2
    dev = sorted(abs(x - med) for x in s)
    mad = (dev[5] + dev[6]) / 2
    assert mad > 0
    between = [i for i, x in enumerate(s) if 2 * (med - mad) < x <= 2 * (med + mad)]
    assert between, "the case must tell the two bounds apart"
    expected = [x > 2 * (med + mad) for x in s]
    res = sybil_direction_removal(gram_matrix(U, torch.float64))
    assert res.malicious.tolist() == expected
    assert res.diagnostics["median"] == pytest.approx(med) and res.diagnostics["mad"] == pytest.approx(mad)
    assert res.diagnostics["threshold"] == pytest.approx(2 * (med + mad))


def test_sybil_guard_when_similarities_are_not_positive():
    # Three mutually opposed directions: all RCS < 0, so s~ + r~ < 0 and the bound 2(s~+r~)
    # would lie below the median; the guard keeps everything.
    U = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
    res = sybil_direction_removal(gram_matrix(U))
    assert not res.malicious.any()
    assert res.diagnostics["threshold"] == math.inf


def honest_and_sybils(seed, n_honest=80, n_sybil=20, d=3000, common=0.35):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g)
    honest = common * direction + torch.randn(n_honest, d, generator=g)
    sybil = torch.randn(d, generator=g) + 0.5 * direction
    sybils = sybil + 0.01 * torch.randn(n_sybil, d, generator=g)
    return torch.cat([honest, sybils])


@pytest.mark.parametrize("seed", range(5))
def test_step1_removes_all_sybils_and_few_honest(seed):
    U = honest_and_sybils(seed)
    mal = sybil_direction_removal(gram_matrix(U)).malicious
    assert mal[80:].all(), "every sybil must be removed"
    assert int(mal[:80].sum()) <= 3


# ------------------------------------------------------------------------------ Step 2, Alg. 4

def test_mean_shift_hand_computed():
    # values 0, 0.1, 0.2, 5, 5.1 with bandwidth 1: bins round(v) = {0, 5} -> seeds 0 and 5.
    # Seed 0: window {0, .1, .2} -> mean 0.1; again 0.1 (moved 0 <= 1e-3): centre 0.1, intensity 3.
    # Seed 5: window {5, 5.1} -> 5.05, then stays: centre 5.05, intensity 2. Far apart: both kept,
    # ordered by intensity, so the three small values are cluster 0.
    labels, centres = mean_shift_labels(torch.tensor([5.0, 0.0, 0.1, 5.1, 0.2]), bandwidth=1.0)
    assert labels.tolist() == [1, 0, 0, 1, 0]
    assert torch.allclose(centres, torch.tensor([0.1, 5.05], dtype=torch.float64), atol=1e-6)
    # estimate_bandwidth, n = 5, quantile 0.4: k = 2nd nearest (itself first): distances
    # 0.1, 0.1, 0.1, 0.1, 0.1 -> 0.1 for each of the five values
    assert estimate_bandwidth(torch.tensor([5.0, 0.0, 0.1, 5.1, 0.2], dtype=torch.float64), 0.4) == pytest.approx(0.1)
    assert mean_shift_labels(torch.full((4,), 2.0))[0].tolist() == [0] * 4  # all equal: one cluster


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 120), st.sampled_from(["normal", "two", "ties", "skewed"]))
def test_mean_shift_matches_scikit_learn(seed, n, kind):
    # scikit-learn's MeanShift(bin_seeding=True) with its estimate_bandwidth is the reference
    np = pytest.importorskip("numpy")
    from sklearn.cluster import MeanShift
    from sklearn.cluster import estimate_bandwidth as sk_bandwidth

    g = torch.Generator().manual_seed(seed)
    v = {"normal": lambda: torch.randn(n, generator=g, dtype=torch.float64),
         "two": lambda: torch.cat([0.05 * torch.randn(n // 2, generator=g, dtype=torch.float64),
                                   1 + 0.1 * torch.randn(n - n // 2, generator=g, dtype=torch.float64)]),
         "ties": lambda: torch.randint(0, 4, (n,), generator=g).double(),
         "skewed": lambda: torch.rand(n, generator=g, dtype=torch.float64) ** 4}[kind]()
    x = v.numpy().reshape(-1, 1)
    bandwidth = float(sk_bandwidth(x, quantile=0.3))
    assert estimate_bandwidth(v, 0.3) == pytest.approx(bandwidth, rel=1e-12, abs=1e-15)
    labels, centres = mean_shift_labels(v)
    if bandwidth <= 0:  # scikit-learn refuses a zero bandwidth; ours puts everything in one cluster
        assert labels.tolist() == [0] * n
        return
    ref = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(x)
    assert labels.tolist() == ref.labels_.tolist()
    assert np.allclose(centres.numpy(), ref.cluster_centers_[:, 0], atol=1e-9)


def test_score_bandwidth_floor():
    # scores equal up to float rounding: the estimate is ~1e-7, the floor 1e-5 * 5 wins
    s = torch.tensor([5.0, 5.0, 5.0000005, 5.0, 4.9999995])
    assert estimate_bandwidth(s.double()) < 1e-6
    assert score_bandwidth(s, None, 0.3) == pytest.approx(5e-5)
    # spread scores: the estimate itself. k = floor(5 * 0.5) = 2 (itself first): nearest-neighbour
    # distances 1, 1, 2, 3, 4 -> mean 2.2
    t = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0])
    assert score_bandwidth(t, None, 0.5) == pytest.approx(2.2)
    assert score_bandwidth(t, 0.25, 0.3) == 0.25 and score_bandwidth(t[:1], None, 0.3) is None


def test_score_bandwidth_counts_the_nearest_other_score_when_few():
    # n = 5, quantile 0.3: scikit-learn's k = floor(1.5) = 1 counts each value itself: estimate 0 for
    # any values. Step 2 counts the nearest other value (k = 2): distances 1, 1, 2, 3, 4 -> mean 2.2.
    t = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0])
    assert estimate_bandwidth(t.double(), 0.3) == 0.0
    assert score_bandwidth(t, None, 0.3) == pytest.approx(2.2)
    # from 7 scores on (floor(7 * 0.3) = 2) both rules agree
    u = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 21.0])
    assert score_bandwidth(u, None, 0.3) == pytest.approx(estimate_bandwidth(u.double(), 0.3))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=2, max_size=6))
def test_few_scores_never_all_become_singletons(values):
    s = torch.tensor(values, dtype=torch.float64)
    assume(len(set(values)) >= 2)
    labels, _ = mean_shift_labels(s, bandwidth=score_bandwidth(s, None, 0.3))
    # the closest pair lies within the bandwidth (the mean nearest-other distance): fewer clusters than scores
    assert int(labels.max()) + 1 < len(values)


def test_step2_with_few_groups_without_attackers():
    """10 benign updates: the largest first-level cluster has few members, so the second mean shift
    runs over 6 or fewer group centroids; they no longer become one cluster each (which made all
    groups but one suspicious and removed ⌈β·|C_2|⌉ honest updates in every such round)."""
    few = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        U = (0.3 + torch.randn(10, 40, generator=g, dtype=torch.float64)) * torch.rand(10, 1, generator=g,
                                                                                       dtype=torch.float64)
        res = similarity_detection(gram_matrix(U, torch.float64), torch.rand(10, generator=g, dtype=torch.float64))
        groups = res.diagnostics["groups"]
        if 2 <= groups <= 6:
            few += 1
            assert res.diagnostics["group_clusters"] < groups
    assert few >= 15  # most of these rounds have 6 or fewer groups


def test_similarity_detection_hand_computed():
    # Honest h_i = e0 + .5 e_i (i=1..4): cos(h_i, h_j) = 1/1.25 = 0.8.
    # Attackers m1 = -e0 + .5 e5, m2 = -e0 + .5 e6: cos(m, h) = -0.8, cos(m1, m2) = 0.8.
    # Line 2 (k = 3, self excluded): s_h = 3 x 0.8 = 2.4; s_m = 0.8 - 0.8 - 0.8 = -0.8.
    # Mean shift (bandwidth 0.5): clusters {h1..h4}, {m1, m2}; r = 4 groups.
    # Groups 1, 2 each hold one honest h and one attacker m: centroid .25(e_a + e_5 or e_6);
    # groups 3, 4 hold one honest each. Centroid cosines: cos(G3, G4) = 0.8, every other pair 0.
    # Centroid RCS (k = 2): G3, G4 -> 0.8; G1, G2 -> 0. Mean shift: {0.8, 0.8} and {0, 0} tie,
    # the higher centre wins, so G1, G2 are suspicious: C2 = {h_a, h_b, m1, m2}.
    # beta = 0.5 removes ceil(0.5 * 4) = 2 lowest line-2 scores: m1 and m2 (-0.8 < 2.4).
    honest = torch.stack([E[0] + 0.5 * E[i] for i in range(1, 5)])
    attackers = torch.stack([-E[0] + 0.5 * E[5], -E[0] + 0.5 * E[6]])
    U = torch.cat([honest, attackers])
    for seed in range(5):  # whichever honest members the random order puts into groups 1 and 2
        keys = torch.rand(6, generator=torch.Generator().manual_seed(seed))
        res = similarity_detection(gram_matrix(U), keys, beta=0.5, bandwidth=0.5)
        assert res.malicious.tolist() == [False] * 4 + [True, True]
        assert res.diagnostics["groups"] == 4 and res.diagnostics["candidates"] == 4
        assert torch.allclose(res.scores, torch.tensor([2.4] * 4 + [-0.8] * 2), atol=1e-6)
        # ⌈β·|C_2|⌉ rounds up: β = 0.3 -> ⌈1.2⌉ = 2 (both attackers); β = 0.2 -> ⌈0.8⌉ = 1 (the first of the
        # two equal lowest scores)
        assert similarity_detection(gram_matrix(U), keys, beta=0.3, bandwidth=0.5).malicious.tolist() == \
            [False] * 4 + [True, True]
        assert similarity_detection(gram_matrix(U), keys, beta=0.2, bandwidth=0.5).malicious.tolist() == \
            [False] * 4 + [True, False]


def test_similarity_detection_single_cluster_removes_nothing():
    U = torch.ones(6, 4)  # identical updates: one cluster, one centroid per group, nothing suspicious
    res = similarity_detection(gram_matrix(U), torch.rand(6), beta=0.5)
    assert not res.malicious.any()
    assert res.diagnostics["clusters"] == 1


def label_flip_like(seed, n_honest=80, n_bad=20, d=2000):
    """Honest updates mix a shared direction with per-client class directions; the minority
    pushes the shared direction the other way, as label flipping does."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(d, generator=g)
    classes = torch.randn(10, d, generator=g)
    with torch.random.fork_rng():  # Dirichlet draws from the global RNG: seeded here, left as it was
        torch.manual_seed(seed)
        mix = torch.distributions.Dirichlet(torch.full((10,), 0.3)).sample((n_honest + n_bad,))
    local = mix @ classes
    U = 0.8 * shared + local + 0.5 * torch.randn(n_honest + n_bad, d, generator=g)
    U[n_honest:] = -0.8 * shared + local[n_honest:] + 0.5 * torch.randn(n_bad, d, generator=g)
    return U


def test_step2_removes_minority_direction_more_than_chance():
    hits = removed = 0
    for seed in range(6):
        U = label_flip_like(seed)
        keys = torch.rand(100, generator=torch.Generator().manual_seed(seed))
        mal = similarity_detection(gram_matrix(U), keys, beta=0.2).malicious
        hits += int(mal[80:].sum())
        removed += int(mal.sum())
    assert removed > 0
    # by chance 20 % of the removed would be attackers; require a large margin above that
    assert hits / removed >= 0.6, (hits, removed)
    assert hits >= 0.5 * 6 * 20 * 0.5  # at least half of what beta allows is found


# ------------------------------------------------------------------------------ Step 3, Alg. 5

def tiny_watermark_problem(seed=0, n_honest=6):
    """A 5-feature, L = 3 linear model with a 4th (watermark) output, a trigger set labelled 3,
    honest updates that train on data + trigger, and an update that undoes the trigger learning."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(5, 4)
    torch.nn.init.normal_(model.weight, generator=g)
    layout = ParamLayout(model)
    x = torch.randn(10 * n_honest, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # labels 0..2
    trig_x = 3 * torch.randn(4, 5, generator=g)
    trig_y = torch.full((4,), 3)
    w_t = layout.flatten(model)

    def local_update(idx, steps=20, lr=0.5):
        m = torch.nn.Linear(5, 4)
        layout.load(m, w_t)
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        xs, ys = torch.cat([x[idx], trig_x]), torch.cat([y[idx], trig_y])
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xs), ys).backward()
            opt.step()
        return layout.flatten(m) - w_t

    honest = torch.stack([local_update(torch.arange(i * 10, i * 10 + 10)) for i in range(n_honest)])
    undo = -4.0 * honest.mean(dim=0) - 2.0 * honest[0]  # pushes the watermark output down hard
    return model, layout, w_t, (trig_x, trig_y), honest, undo


def loss_loop(model, layout, params, batch):
    out = []
    for p in params:
        m = torch.nn.Linear(5, 4)
        layout.load(m, p)
        with torch.no_grad():
            out.append(float(torch.nn.functional.cross_entropy(m(batch[0]), batch[1])))
    return torch.tensor(out)


def test_watermark_verification_removes_trigger_undoing_update():
    model, layout, w_t, trig, honest, undo = tiny_watermark_problem()
    U = torch.cat([honest, undo[None]])

    def loss_fn(p, batch):
        return batched_loss(model, layout, p, batch)

    res = watermark_verification(U, w_t, loss_fn, trig, lam=-5.0, chunk=4)
    expected = loss_loop(model, layout, w_t[None], trig)[0] - loss_loop(model, layout, w_t + U, trig)
    assert torch.allclose(res.scores, expected, atol=1e-4)
    assert (expected[:-1] > 0).all(), "honest updates reduce the trigger loss"
    assert expected[-1] <= -5.0, "the crafted update raises the trigger loss by at least 5"
    assert res.malicious.tolist() == [False] * len(honest) + [True]
    # index restricts C to a subset, results in its order
    sub = watermark_verification(U, w_t, loss_fn, trig, lam=-5.0, index=torch.tensor([6, 1]))
    assert torch.allclose(sub.scores, expected[[6, 1]], atol=1e-4)


def test_watermark_nan_loss_counts_as_no_trigger_learning():
    # loss = first coordinate of the model: w_t = (10, 0) has loss 10. Reductions: +1 (kept),
    # -6 <= lambda = -5 (removed), NaN (a model with non-finite outputs: removed).
    U = torch.tensor([[-1.0, 0.0], [6.0, 0.0], [math.nan, 0.0]])
    res = watermark_verification(U, torch.tensor([10.0, 0.0]), lambda p, b: p[:, 0], None, lam=-5.0)
    assert res.scores[:2].tolist() == [1.0, -6.0] and math.isnan(res.scores[2])
    assert res.malicious.tolist() == [False, True, True]


def test_watermark_reduction_equal_to_lambda_is_removed():
    # Alg. 5 keeps only reductions > λ: loss 10 -> 15 is a reduction of exactly -5 = λ, removed;
    # 10 -> 14.5 (-4.5) is kept.
    U = torch.tensor([[5.0, 0.0], [4.5, 0.0]])
    res = watermark_verification(U, torch.tensor([10.0, 0.0]), lambda p, b: p[:, 0], None, lam=-5.0)
    assert res.scores.tolist() == [-5.0, -4.5]
    assert res.malicious.tolist() == [True, False]


# ------------------------------------------------------------------------------ Step 4, Alg. 6

def test_magnitude_rectification_hand_computed():
    # norms 1, 2, 3, 4, 100 -> median 3; D = [3, 1.5, 1, 4/3, 100/3].
    # smallest floor(5/2) = 2 ratios: 1, 4/3 -> mean 7/6, population std 1/6 -> bound 8 * 4/3 = 32/3.
    # 100/3 > 32/3: the norm-100 update goes. The rest have mean norm 2.5: scale = 2.5 / norm.
    U = torch.stack([1 * E[0], 2 * E[1], 3 * E[2], 4 * E[3], 100 * E[4]])
    res = magnitude_rectification(gram_matrix(U))
    assert res.malicious.tolist() == [False, False, False, False, True]
    assert res.diagnostics["threshold"] == pytest.approx(32 / 3)
    assert torch.allclose(res.scores, torch.tensor([3, 1.5, 1, 4 / 3, 100 / 3]), atol=1e-6)
    assert torch.allclose(res.scale.float(), torch.tensor([2.5, 1.25, 2.5 / 3, 0.625, 0.0]), atol=1e-6)


@pytest.mark.parametrize("factor", [100.0, 0.01])
def test_step4_removes_scaled_update_and_equalises_norms(factor):
    g = torch.Generator().manual_seed(3)
    U = torch.randn(30, 500, generator=g) * (1 + torch.rand(30, 1, generator=g))  # norms vary by up to 2x
    U[7] *= factor
    out = HeteroFL(steps=(4,))(U)
    assert out.removed_by["magnitude_rectification"].tolist() == [7]
    kept = out.kept.nonzero().flatten()
    mean_norm = U[kept].norm(dim=1).mean()
    # every kept update enters the average with norm mean_norm: weight_i * |C4| * ||g_i|| = mean
    assert torch.allclose(out.weights[kept] * len(kept) * U[kept].norm(dim=1), mean_norm.expand(len(kept)),
                          rtol=1e-5)
    rescaled = U[kept] / U[kept].norm(dim=1, keepdim=True) * mean_norm
    assert torch.allclose(out.update, rescaled.mean(dim=0), atol=1e-5)


# ------------------------------------------------------------------------------ Composite, Alg. 1

def test_ablation_steps_1_is_mean_of_step1_survivors():
    U = honest_and_sybils(0, d=500)
    out = HeteroFL(steps=(1,))(U)
    kept = ~sybil_direction_removal(gram_matrix(U)).malicious
    assert torch.equal(out.kept, kept)
    assert torch.allclose(out.update, U[kept].mean(dim=0), atol=1e-5)
    assert set(out.removed_by) == {"sybil_direction_removal"}


def test_full_heterofl_with_watermark_on_tiny_model():
    model, layout, w_t, trig, honest, undo = tiny_watermark_problem(n_honest=8)
    U = torch.cat([honest, undo[None]])
    ctx = RoundContext(global_params=w_t, trigger_set=trig,
                       loss_fn=lambda p, b: batched_loss(model, layout, p, b))
    out = HeteroFL()(U, ctx)
    assert not out.kept[-1]
    assert set(out.removed_by) == {
        "sybil_direction_removal", "similarity_detection", "watermark_verification", "magnitude_rectification"}
    for name in out.removed_by:
        assert f"time_{name}" in out.diagnostics
    removed = torch.cat(list(out.removed_by.values()))
    assert sorted(removed.tolist()) == out.removed.tolist()  # each removed row is reported once


def test_step3_needs_context():
    with pytest.raises(ValueError, match="watermark"):
        HeteroFL()(torch.randn(5, 3))


def test_everything_removed_keeps_global_model():
    model, layout, w_t, trig, honest, undo = tiny_watermark_problem()
    U = torch.stack([undo, 1.1 * undo, 0.9 * undo])
    ctx = RoundContext(global_params=w_t, trigger_set=trig,
                       loss_fn=lambda p, b: batched_loss(model, layout, p, b))
    out = HeteroFL(steps=(3, 4))(U, ctx)
    assert not out.kept.any()
    assert torch.equal(out.update, torch.zeros_like(w_t))
    assert out.diagnostics["all_removed"] is True


def test_malformed_rows_are_removed_and_reported():
    U = torch.randn(8, 20, generator=torch.Generator().manual_seed(0))
    U[1, 3] = float("nan")
    U[4, 0] = float("inf")
    U[6] = 0.0
    out = HeteroFL(steps=(1, 2, 4))(U)
    assert out.removed_by["non_finite"].tolist() == [1, 4]
    assert out.removed_by["zero_norm"].tolist() == [6]
    assert not out.kept[[1, 4, 6]].any()
    assert torch.isfinite(out.update).all()
    clean = HeteroFL(steps=(1, 2, 4))(U[[0, 2, 3, 5, 7]])
    assert torch.allclose(out.update, clean.update)


def test_huge_finite_updates_are_handled_in_float64():
    # Near a diverged model finite entries of ~1e25 overflow a float32 Gram (squares > 3.4e38).
    # Every step is scale-invariant: scaling all rows by 1e25 keeps the same clients and scales the
    # update; a few huge rows among normal ones are not kept (step 4's ratio to the median is ~1e25,
    # if step 2 has not already removed them).
    g = torch.Generator().manual_seed(5)
    U = torch.randn(30, 400, generator=g) * (1 + torch.rand(30, 1, generator=g))
    huge = U * 1e25
    assert not torch.isfinite(gram_matrix(huge)).all() and torch.isfinite(huge).all()
    small, big = HeteroFL(steps=(1, 2, 4))(U), HeteroFL(steps=(1, 2, 4))(huge)
    assert torch.equal(small.kept, big.kept) and torch.allclose(big.update / 1e25, small.update, rtol=1e-4, atol=1e-6)
    mixed = U.clone()
    mixed[[4, 11]] *= 1e25
    out = HeteroFL(steps=(1, 2, 4))(mixed)
    assert not out.kept[[4, 11]].any()
    assert torch.isfinite(out.update).all() and float(out.update.abs().max()) < 10


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_n_is_defined(n):
    # n < 4: with positive similarities nothing is excessive, one cluster or a tie; every update kept
    U = torch.ones(n, 6) + 0.1 * torch.randn(n, 6, generator=torch.Generator().manual_seed(n))
    out = HeteroFL(steps=(1, 2, 4))(U)
    assert out.kept.all()
    norms = U.norm(dim=1)
    assert torch.allclose(out.update, (U / norms[:, None]).mean(0) * norms.mean(), atol=1e-5)


def test_wrong_length_and_bad_shapes():
    with pytest.raises(ValueError, match="d=4"):
        HeteroFL(steps=(1,))(torch.randn(3, 5), RoundContext(global_params=torch.zeros(4)))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        HeteroFL(steps=(1,))(torch.randn(5))


@pytest.mark.parametrize("kwargs, key", [
    ({"steps": (5,)}, "steps"), ({"steps": (1, 1)}, "steps"), ({"steps": ()}, "steps"),
    ({"beta": 1.5}, "beta"), ({"beta": -0.1}, "beta"), ({"bandwidth": 0.0}, "bandwidth"),
    ({"bandwidth_quantile": 0.0}, "bandwidth_quantile"), ({"magnitude_factor": -1}, "magnitude_factor"),
    ({"watermark_chunk": 0}, "watermark_chunk"),
])
def test_bad_parameters(kwargs, key):
    with pytest.raises(ValueError, match=key):
        HeteroFL(**kwargs)


# ------------------------------------------------------------------------------ properties

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 30))
def test_permuting_clients_permutes_kept(seed, n):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, 40, generator=g) + torch.randn(40, generator=g)
    U[: n // 4] = U[0] + 0.01 * torch.randn(n // 4, 40, generator=g)  # a few sybils
    perm = torch.randperm(n, generator=g)
    ids = torch.arange(100, 100 + n)
    a = HeteroFL(steps=(1, 2, 4))(U, RoundContext(client_ids=ids, generator=torch.Generator().manual_seed(7)))
    b = HeteroFL(steps=(1, 2, 4))(U[perm], RoundContext(client_ids=ids[perm],
                                                        generator=torch.Generator().manual_seed(7)))
    assert torch.equal(a.kept[perm], b.kept)
    assert torch.allclose(a.update, b.update, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25))
@example(seed=160, n=10)  # RCS scores 5 +- 1 ulp: split in two clusters before the bandwidth floor
def test_identical_updates_return_that_update(seed, n):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(30, generator=g)
    out = HeteroFL(steps=(1, 2, 4))(u.repeat(n, 1))
    assert out.kept.all()
    assert torch.allclose(out.update, u, atol=1e-5)


def test_same_seed_same_result():
    U = label_flip_like(3)
    a = HeteroFL(steps=(1, 2, 4))(U, RoundContext(generator=torch.Generator().manual_seed(5)))
    b = HeteroFL(steps=(1, 2, 4))(U, RoundContext(generator=torch.Generator().manual_seed(5)))
    assert torch.equal(a.kept, b.kept) and torch.equal(a.update, b.update)


# ------------------------------------------------------------------------------ parameters, defaults,
# diagnostics: what the composite passes to each step and reports (the mutation run's survivors)

def test_the_papers_defaults():
    import inspect

    rule = HeteroFL()
    assert (rule.steps, rule.beta, rule.lam, rule.sybil_factor, rule.magnitude_factor) == ((1, 2, 3, 4), 0.2, -5.0, 2.0, 8.0)
    assert (rule.bandwidth, rule.bandwidth_quantile, rule.exclude_self) == (None, 0.3, True)
    defaults = {f.__name__: {k: p.default for k, p in inspect.signature(f).parameters.items()
                             if p.default is not inspect.Parameter.empty}
                for f in (sybil_direction_removal, similarity_detection, watermark_verification,
                          magnitude_rectification, estimate_bandwidth)}
    assert defaults["sybil_direction_removal"] == {"factor": 2.0, "exclude_self": True}
    assert defaults["similarity_detection"]["beta"] == 0.2
    assert defaults["similarity_detection"]["bandwidth_quantile"] == 0.3
    assert defaults["watermark_verification"]["lam"] == -5.0
    assert defaults["magnitude_rectification"] == {"factor": 8.0}
    assert defaults["estimate_bandwidth"]["quantile"] == 0.3  # scikit-learn's default


@pytest.mark.parametrize("kwargs", [
    {"beta": 0.0}, {"beta": 1.0}, {"sybil_factor": 0.5}, {"magnitude_factor": 0.5}, {"bandwidth": 0.5},
    {"bandwidth_quantile": 1.0}, {"watermark_chunk": 1}])
def test_parameters_at_their_bounds_are_accepted(kwargs):
    assert all(getattr(HeteroFL(**kwargs), k) == v for k, v in kwargs.items())


@pytest.mark.parametrize("kwargs, key", [
    ({"sybil_factor": 0.0}, "sybil_factor"), ({"magnitude_factor": 0.0}, "magnitude_factor"),
    ({"bandwidth_quantile": 1.5}, "bandwidth_quantile"), ({"bandwidth": -1.0}, "bandwidth")])
def test_parameters_beyond_their_bounds_are_refused(kwargs, key):
    with pytest.raises(ValueError, match=key):
        HeteroFL(**kwargs)


def rows_with_cosines(C):
    """Unit vectors whose cosine matrix is ``C`` (positive definite): the rows of its Cholesky factor."""
    return torch.linalg.cholesky(C.double()).float()


def test_composite_passes_step1s_factor_and_self_exclusion():
    C = torch.tensor([[1, 0, 0, 0, .5], [0, 1, 0, 0, .5], [0, 0, 1, .5, 0], [0, 0, .5, 1, 0], [.5, .5, 0, 0, 1]],
                     dtype=torch.float64)
    U = rows_with_cosines(C)  # test_sybil_bound_is_strict's case: s_4 = 1 sits at the bound 2 (0.5 + 0)
    assert HeteroFL(steps=(1,))(U).kept.all()
    assert HeteroFL(steps=(1,), sybil_factor=1.999)(U).kept.tolist() == [True] * 4 + [False]
    for exclude in (True, False):
        out = HeteroFL(steps=(1,), exclude_self=exclude)(U)
        direct = sybil_direction_removal(gram_matrix(U, torch.float64), exclude_self=exclude)
        assert torch.allclose(out.scores["sybil_direction_removal"], direct.scores.float())
    # with self included every score carries its own cosine 1 (k = 2: itself and the best other one)
    assert HeteroFL(steps=(1,), exclude_self=False)(U).scores["sybil_direction_removal"].tolist() == \
        pytest.approx([1.5, 1.5, 1.5, 1.5, 1.5])


def test_composite_passes_step2s_parameters():
    U = label_flip_like(1, n_honest=24, n_bad=6, d=300)
    G = gram_matrix(U, torch.float64)
    keys = _client_keys(torch.arange(30), torch.Generator().manual_seed(4))  # as the composite draws them
    # removed by default: 24, 25, 27 (attackers); beta 0.5: all six; quantile 0.9: none; bandwidth 0.05:
    # 20, 28; self included: the same rows, scores shifted by the self-cosine
    settings = [{}, {"beta": 0.5}, {"bandwidth_quantile": 0.9}, {"bandwidth": 0.05}, {"exclude_self": False}]
    outcomes = []
    for kw in settings:
        out = HeteroFL(steps=(2,), **kw)(U, RoundContext(generator=torch.Generator().manual_seed(4)))
        direct = similarity_detection(G, keys, **kw)
        assert out.kept.tolist() == (~direct.malicious).tolist()
        assert torch.allclose(out.scores["similarity_detection"], direct.scores.float())
        assert out.diagnostics["similarity_detection"] == direct.diagnostics
        outcomes.append((tuple(out.kept.tolist()), tuple(direct.scores.tolist())))
    assert len(set(outcomes)) == len(settings), "every parameter must change this round's outcome"


def test_composite_passes_lambda_and_step4s_factor():
    U = torch.tensor([[-1.0, 0.0], [6.0, 0.0], [4.5, 0.0]])
    ctx = RoundContext(global_params=torch.tensor([10.0, 0.0]), trigger_set=(None, None),
                       loss_fn=lambda p, b: p[:, 0])
    # reductions +1, -6, -4.5: λ = -5 removes the second, λ = -4 the last two
    assert HeteroFL(steps=(3,))(U, ctx).kept.tolist() == [True, False, True]
    assert HeteroFL(steps=(3,), lam=-4.0)(U, ctx).kept.tolist() == [True, False, False]
    V = torch.stack([1 * E[0], 2 * E[1], 3 * E[2], 4 * E[3], 100 * E[4]])  # step 4's hand case: bound 32/3
    assert HeteroFL(steps=(4,))(V).kept.tolist() == [True] * 4 + [False]
    assert HeteroFL(steps=(4,), magnitude_factor=40.0)(V).kept.all()  # bound 40 · 4/3 > 100/3


def test_composite_reports_every_steps_scores_and_diagnostics():
    model, layout, w_t, trig, honest, undo = tiny_watermark_problem(n_honest=8)
    U = torch.cat([honest, undo[None]])
    ctx = RoundContext(global_params=w_t, trigger_set=trig, loss_fn=lambda p, b: batched_loss(model, layout, p, b))
    out = HeteroFL()(U, ctx)
    names = ("sybil_direction_removal", "similarity_detection", "watermark_verification", "magnitude_rectification")
    assert "time_gram" in out.diagnostics
    assert set(out.diagnostics["sybil_direction_removal"]) == {"median", "mad", "threshold"}
    assert set(out.diagnostics["similarity_detection"]) == {"clusters", "groups", "group_clusters",
                                                           "suspicious_groups", "candidates"}
    assert set(out.diagnostics["watermark_verification"]) == {"loss_before", "lambda"}
    assert set(out.diagnostics["magnitude_rectification"]) == {"median_norm", "threshold", "mean_norm"}
    reached = torch.ones(9, dtype=torch.bool)
    for name in names:
        scores = out.scores[name]
        assert scores.shape == (9,)
        # a row removed by an earlier step has no score in the later ones
        assert torch.isfinite(scores[reached]).all() and torch.isnan(scores[~reached]).all()
        reached[out.removed_by[name]] = False


def test_step_diagnostics_hand_computed():
    # similarity detection's hand case: 2 clusters, 4 groups of which 2 suspicious, 4 candidates
    honest = torch.stack([E[0] + 0.5 * E[i] for i in range(1, 5)])
    attackers = torch.stack([-E[0] + 0.5 * E[5], -E[0] + 0.5 * E[6]])
    res = similarity_detection(gram_matrix(torch.cat([honest, attackers])), torch.rand(6), beta=0.5, bandwidth=0.5)
    assert res.diagnostics == {"clusters": 2, "groups": 4, "group_clusters": 2, "suspicious_groups": 2,
                               "candidates": 4}
    # watermark: loss before 10, λ as given
    res = watermark_verification(torch.tensor([[5.0, 0.0]]), torch.tensor([10.0, 0.0]), lambda p, b: p[:, 0], None,
                                 lam=-5.0)
    assert res.diagnostics == {"loss_before": 10.0, "lambda": -5.0}
    # magnitude's hand case: median norm 3, threshold 32/3, mean of the kept norms 2.5
    res = magnitude_rectification(gram_matrix(torch.stack([1 * E[0], 2 * E[1], 3 * E[2], 4 * E[3], 100 * E[4]])))
    assert res.diagnostics == pytest.approx({"median_norm": 3.0, "threshold": 32 / 3, "mean_norm": 2.5})


def test_magnitude_with_three_updates_and_at_its_threshold():
    # norms 1, 2, 4: median 2, D = [2, 1, 2]; the smallest max(1, floor(3/2)) = 1 ratio is 1: mean 1,
    # std 0, threshold 8 · 1 = 8: all kept, scaled to the mean norm 7/3
    res = magnitude_rectification(gram_matrix(torch.stack([1 * E[0], 2 * E[1], 4 * E[2]]), torch.float64))
    assert res.scores.tolist() == [2.0, 1.0, 2.0] and res.diagnostics["threshold"] == 8.0
    assert not res.malicious.any() and torch.allclose(res.scale, torch.tensor([7 / 3, 7 / 6, 7 / 12], dtype=torch.float64))
    # factor 2: threshold 2, and D = 2 is not above it (Alg. 6 removes D > threshold)
    assert not magnitude_rectification(gram_matrix(torch.stack([1 * E[0], 2 * E[1], 4 * E[2]])), factor=2.0).malicious.any()
    assert magnitude_rectification(gram_matrix(torch.stack([1 * E[0], 2 * E[1], 4 * E[2]])),
                                   factor=1.9).malicious.tolist() == [True, False, True]
    # a factor below 1 removes everything: no mean norm, every scale 0
    res = magnitude_rectification(gram_matrix(torch.stack([1 * E[0], 2 * E[1], 4 * E[2]])), factor=0.5)
    assert res.malicious.all() and res.diagnostics["mean_norm"] == 0.0 and not res.scale.any()
    empty = magnitude_rectification(torch.zeros(0, 0))
    assert empty.malicious.numel() == 0 and empty.diagnostics == {}


def test_rcs_of_two_updates_and_tiny_mean_shifts():
    U = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # n = 2, k = 1: self excluded, each scores its cosine with the other, 1/sqrt(2); included, itself (1)
    assert relative_cosine_similarity(cos_matrix(U), torch.arange(2)).tolist() == pytest.approx([0.5 ** 0.5] * 2)
    assert relative_cosine_similarity(cos_matrix(U)).tolist() == pytest.approx([1.0, 1.0])
    assert mean_shift_labels(torch.tensor([3.0]))[0].tolist() == [0]
    assert mean_shift_labels(torch.tensor([0.0, 10.0]), bandwidth=1.0)[0].tolist() == [1, 0]  # tie: higher centre first
    labels, centres = mean_shift_labels(torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0]))  # estimate 0: one cluster
    assert labels.tolist() == [0] * 5 and labels.dtype == torch.long and centres.tolist() == [1.8]
    # step 2's bandwidth for two scores: the distance to the other one; floor 1e-5 below scores of 1
    assert score_bandwidth(torch.tensor([0.0, 1.0]), None, 0.3) == 1.0
    assert score_bandwidth(torch.tensor([0.5, 0.5, 0.5]), None, 0.3) == pytest.approx(1e-5, rel=1e-9)
    u = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0, 15.0, 21.0])
    assert score_bandwidth(u, None, 0.6) == pytest.approx(estimate_bandwidth(u.double(), 0.6))


def test_client_keys_are_the_generators_draws_in_client_id_order():
    keys = _client_keys(torch.tensor([30, 10, 20]), torch.Generator().manual_seed(9))
    draws = torch.rand(3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert keys.dtype == torch.float64 and keys.tolist() == [draws[2], draws[0], draws[1]]


def test_step3_error_names_what_is_missing():
    with pytest.raises(ValueError, match=r"^HeteroFL step 3 \(watermark verification\) needs ctx.loss_fn, "
                                         r"ctx.trigger_set and ctx.global_params; provide them or leave 3 out of steps$"):
        HeteroFL()(torch.randn(5, 3))


def test_bandwidth_defaults_and_quantile_reach_the_mean_shift():
    v = torch.tensor([0.0, 0.1, 0.2, 0.35, 1.0, 1.1, 1.3, 2.0, 2.05, 3.0], dtype=torch.float64)
    # scikit-learn's default quantile, 0.3: k = 3 (itself counted)
    assert estimate_bandwidth(v) == estimate_bandwidth(v, 0.3) != estimate_bandwidth(v, 0.5)
    for q in (0.2, 0.5, 0.8):
        by_quantile = mean_shift_labels(v, quantile=q)
        by_bandwidth = mean_shift_labels(v, bandwidth=estimate_bandwidth(v, q))
        assert torch.equal(by_quantile[0], by_bandwidth[0])
    assert len({int(mean_shift_labels(v, quantile=q)[0].max()) for q in (0.2, 0.5, 0.8)}) > 1
