"""The adaptive attack's oracle (defense/oracle.py, defense/rows.py): the affine row view against the
materialised rows, the fast oracle against the plain defense call for every rule, and
``oracle_agrees`` — the oracle's predicted kept set against the server's real decision — on crafted
rounds through ServerRound (standalone backend) and the FedML aggregator (MPI backend)."""
import copy
import math

import pytest
import torch

from fedml_heterofl.attack import build_attack
from fedml_heterofl.defense import REGISTRY as DEFENSES, RoundContext, build_defense
from fedml_heterofl.defense.base import RowsDefense
from fedml_heterofl.defense.oracle import Oracle, private_generator
from fedml_heterofl.defense.rows import AffineBasis, DenseRows, first_equal_rows, model_losses, poisoned_rows
from fedml_heterofl.models import ParamLayout, batched_loss
from fedml_heterofl.simulation.local_training import client_seed, local_sgd
from fedml_heterofl.simulation.server_round import ServerRound
from test_attacks import KeepSmallNorms

N, F, L, FEATURES = 20, 5, 3, 6
MALICIOUS = (1, 6, 7, 12, 18)
PARAMS = {"multikrum": {"f": F}, "dnc": {"f": F, "subsample_dim": 12}, "zeno": {"b": F},
          "heterofl": {"lam": -50.0}, "trimmed_mean": {"f": F}, "bulyan": {"f": 4}}
#: rules whose aggregate uses every update (their kept set never changes with γ)
KEEP_ALL = ("fedavg", "median", "trimmed_mean", "geomed", "centered_clipping")
RULES = sorted(DEFENSES) + ["heterofl_steps_1_2", "multikrum_iterative"]


def rule(name):
    if name == "heterofl_steps_1_2":
        return build_defense("heterofl", steps=(1, 2))
    if name == "multikrum_iterative":
        return build_defense("multikrum", f=F, variant="iterative")
    return build_defense(name, **PARAMS.get(name, {}))


def federation(seed=0):
    """A small LR federation: N clients' honest updates (trained on skewed labels + the trigger set),
    the context pieces every rule needs, and the model."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(L, FEATURES, generator=g)
    trigger = (3 * torch.randn(4, FEATURES, generator=g), torch.full((4,), L))
    root = (centres[torch.arange(L).repeat(5)] + torch.randn(15, FEATURES, generator=g), torch.arange(L).repeat(5))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Linear(FEATURES, L + 1)
    layout = ParamLayout(model)
    w = layout.flatten(model)
    rows = []
    for i in range(N):
        y = torch.randint(0, L, (30,), generator=g)
        y[:12] = i % L
        x = centres[y] + torch.randn(30, FEATURES, generator=g)
        x, y = torch.cat([x, trigger[0]]), torch.cat([y, trigger[1]])
        rows.append(local_sgd(model, layout, w, x, y, epochs=1, batch_size=8, lr=0.1, seed=client_seed(seed, 0, i)))
    U = torch.stack(rows)

    def loss_fn(p, b):
        return batched_loss(model, layout, p, b)

    def server_update(t, w_t):
        return local_sgd(model, layout, w_t, *root, epochs=1, batch_size=8, lr=0.1, seed=client_seed(seed, t, 10**6))

    return U, w, loss_fn, trigger, root, server_update, model


def context(U, w, loss_fn, trigger, root, server_update, ids=None, seed=3):
    return RoundContext(round_idx=0, global_params=w, generator=torch.Generator().manual_seed(seed),
                        client_ids=torch.arange(U.shape[0]) if ids is None else ids,
                        sample_counts=torch.full((U.shape[0],), 34.0), loss_fn=loss_fn, trigger_set=trigger,
                        validation_batch=root, server_update=server_update(0, w))


# ------------------------------------------------------------------------------------------- rows

def test_affine_rows_equal_the_materialised_rows():
    g = torch.Generator().manual_seed(1)
    K, b, D = torch.randn(7, 50, generator=g), torch.randn(50, generator=g), torch.randn(3, 50, generator=g)
    basis = AffineBasis(K, b, D)
    gamma = 1.7
    rows = basis.rows(gamma)
    # the candidate round, built by hand: K, then b + γ·Δ_j
    U = torch.cat([K, torch.stack([b + gamma * D[j] for j in range(3)])])
    assert torch.equal(rows.materialise(), U) and torch.equal(poisoned_rows(b, D, gamma), U[7:])
    U64 = U.double()
    assert torch.allclose(rows.gram(), U64 @ U64.T, rtol=1e-6, atol=1e-6)
    assert torch.allclose(rows.sq_norms(), (U64 ** 2).sum(1), rtol=1e-6)
    v = torch.randn(50, generator=g)
    assert torch.allclose(rows.dots(v), U64 @ v.double(), rtol=1e-6, atol=1e-6)
    cols = torch.tensor([3, 0, 41])
    assert torch.equal(rows.columns(cols), U[:, cols])  # exact: the rows the attack sends
    # a subset in another order: every view follows the rows
    index = torch.tensor([9, 2, 7, 0])
    sub = rows.subset(index)
    assert torch.equal(sub.materialise(), U[index]) and torch.equal(sub.columns(cols), U[index][:, cols])
    assert torch.allclose(sub.gram(), U64[index] @ U64[index].T, rtol=1e-6, atol=1e-6)
    # the aggregate's distance from b, from the pieces
    wts = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert sub.deviation(wts) == pytest.approx(float((wts.double() @ U64[index] - b.double()).norm()), rel=1e-6)
    # model losses: the known rows' are computed once and reused
    calls = []

    def loss_fn(p, batch):
        calls.append(p.shape[0])
        return p.sum(dim=1) * batch

    w = torch.zeros(50)
    expected = (w + U[index]).sum(dim=1).double() * 2
    assert torch.allclose(sub.losses(torch.arange(4), w, loss_fn, 2, chunk=2), expected)
    again = basis.rows(0.5).subset(torch.tensor([2]))
    assert torch.allclose(again.losses(torch.arange(1), w, loss_fn, 2, chunk=2), 2 * (w + K[2]).sum().double())
    # the 7 known rows in chunks of 2 once (4 calls), the 2 poisoned rows 9 and 7 in one call, and
    # nothing more for the second γ (its only row is known)
    assert calls == [2, 2, 2, 1, 2]


def test_rounded_candidate_sees_the_rows_as_sent():
    # b + γΔ in float32 is not b + γΔ: with b large against γΔ the rounding is a visible share of the
    # poisoned rows' differences. The rounded candidate's Gram matrix and dot products are those of the
    # float32 rows the attack sends (to float64 accumulation order); the affine ones are those of the
    # exact b + γΔ, off by the rounding.
    g = torch.Generator().manual_seed(4)
    K, b, D = torch.randn(6, 300, generator=g), 1e3 * torch.randn(300, generator=g), torch.randn(4, 300, generator=g)
    gamma = 0.123456789
    sent = poisoned_rows(b, D, gamma)
    U64 = torch.cat([K, sent]).double()
    exact = torch.cat([K.double(), b.double() + gamma * D.double()])
    v = torch.randn(300, generator=g)
    index = torch.tensor([8, 1, 6, 9, 3])
    rounded = AffineBasis(K, b, D).rows(gamma, rounded=True).subset(index)
    affine = AffineBasis(K, b, D).rows(gamma).subset(index)
    scale = float((U64 @ U64.T).abs().max())
    assert float((rounded.gram() - U64[index] @ U64[index].T).abs().max()) <= 1e-14 * scale
    assert torch.allclose(rounded.sq_norms(), (U64[index] ** 2).sum(1), rtol=1e-14, atol=0)
    assert torch.allclose(rounded.dots(v), U64[index] @ v.double(), rtol=1e-12, atol=1e-9)
    # the affine view matches the exact rows instead, and differs from the sent rows' Gram by far more
    assert float((affine.gram() - exact[index] @ exact[index].T).abs().max()) <= 1e-12 * scale
    assert float((affine.gram() - U64[index] @ U64[index].T).abs().max()) > 1e-10 * scale


@pytest.mark.parametrize("case", ["ordinary", "near_zero", "overflow", "tiny"])
def test_candidate_screen_bound_agrees_with_the_rows_as_sent(case):
    # the bound-based screen (no pass over the rows) must say what finite_rows says of the sent rows
    g = torch.Generator().manual_seed(7)
    K, b, D = torch.randn(5, 64, generator=g), torch.randn(64, generator=g), torch.randn(3, 64, generator=g)
    gammas = [0.0, 0.37, 5.0, -2.5]
    if case == "near_zero":  # row 1 at γ = 1 is b + Δ_1 = 1 ulp-level residue of b
        D[1] = -b + 1e-7 * torch.randn(64, generator=g)
        gammas = [1.0, 1.0 + 1e-7]
    elif case == "overflow":  # b + γΔ overflows float32 for the larger γ
        b, gammas = b * 1e36, [1.0, 1e3]
        D = D * 1e36
    elif case == "tiny":  # everything near float32's smallest normal numbers
        b, D, gammas = b * 1e-36, D * 1e-36, [0.5, 3.0]
    basis = AffineBasis(K, b, D)
    for gamma in gammas:
        rows = basis.rows(gamma)
        finite, nonzero = rows.candidate.screen()
        sent = poisoned_rows(b, D, gamma)
        assert finite.tolist() == torch.isfinite(sent).all(dim=1).tolist()
        assert nonzero.tolist() == [bool((r != 0).any()) for r in sent]


def test_affine_rows_screen_like_the_dense_rows():
    K = torch.randn(5, 8)
    K[1, 3] = math.nan
    K[3] = 0
    D = torch.randn(2, 8)
    b = -D[0]  # at γ = 1 the first poisoned row is exactly zero
    rows = AffineBasis(K, b, D).rows(1.0)
    dense = DenseRows(rows.materialise())
    for mine, theirs in zip(rows.screen(), dense.screen()):
        assert torch.equal(mine, theirs)
    assert rows.screen()[0].tolist() == [True, False, True, True, True, True, True]
    assert rows.screen()[1].tolist() == [True, True, True, False, True, False, True]  # NaN row: not a zero norm
    # the NaN row does not reach the other rows' Gram entries
    assert torch.isfinite(rows.subset(torch.tensor([0, 2, 4, 6])).gram()).all()


# ------------------------------------------------------------------------- fast oracle = plain call

@pytest.mark.parametrize("name", RULES)
def test_fast_oracle_decides_as_the_plain_call(name):
    U, w, loss_fn, trigger, root, server_update, _ = federation()
    defense = rule(name)
    mal = torch.tensor(MALICIOUS)
    known = U[[i for i in range(N) if i not in MALICIOUS]]
    base = U[:N - F].mean(dim=0)
    g = torch.Generator().manual_seed(7)
    # against the benign mean, each attacker's direction randomly scaled per coordinate: in general
    # position (d = 28 here; Alg. 7's sign flips of 3 coordinates would make exact distance ties, which
    # float rounding — not the rule — decides, in the server's call as in any prediction of it)
    jitter = 1 + 0.3 * torch.randn(F, U.shape[1], generator=g)
    directions = -U[:N - F].std(dim=0) * torch.sign(base) * jitter
    ctx = context(torch.cat([known, U[mal]]), w, loss_fn, trigger, root, server_update)
    fast = Oracle(defense, known, base, directions, ctx)
    plain = Oracle(defense, known, base, directions, ctx, plain=True)
    assert fast.plain == (not isinstance(defense, RowsDefense)) and plain.plain
    outcomes = set()
    for gamma in (0.0, 0.05, 0.3, 1.0, 2.5, 6.0, 20.0):
        a, b = fast(gamma), plain(gamma)
        assert torch.equal(a.kept, b.kept), f"γ={gamma}"
        assert a.deviation == pytest.approx(b.deviation, rel=1e-5, abs=1e-7)
        # and the plain call is the defense on the rows the attack sends
        real = defense(torch.cat([known, poisoned_rows(base, directions, gamma)]), private_generator(ctx))
        assert torch.equal(b.kept, real.kept)
        outcomes.add(tuple(a.kept[-F:].tolist()))
    if name not in KEEP_ALL:  # rules that select: the decisions on the poisoned rows vary with γ
        assert len(outcomes) > 1, "the tested γ never changed the decision; the test would not see a difference"


@pytest.mark.parametrize("tau", [None, 0.05])
def test_centered_clipping_oracle_from_the_gram_matrix_with_the_previous_centre(tau):
    """Round 1 centres at round 0's aggregate (outside the rows): the fast oracle's harm measures (the
    aggregate's coefficients, then ‖x Z + β c‖) equal the plain call's, and its calls move no state."""
    U, *_ = federation(seed=9)
    known, base = U[:N - F], U[:N - F].mean(dim=0)
    directions = -U[:N - F].std(dim=0).expand(F, -1)
    defense = rule("centered_clipping") if tau is None else build_defense("centered_clipping", tau=tau)
    centre = defense(U, RoundContext(round_idx=0)).update  # the server's round 0
    ctx = RoundContext(round_idx=1)
    fast = Oracle(defense, known, base, directions, ctx)
    assert not fast.plain
    gammas = (0.0, 0.4, 3.0, -2.0)
    outcomes = [fast(gamma) for gamma in gammas]
    assert set(defense._aggregates) == {0}, "a fast call must not store an aggregate"
    for gamma, a in zip(gammas, outcomes):
        b = Oracle(defense, known, base, directions, ctx, plain=True)(gamma)
        real = defense(torch.cat([known, poisoned_rows(base, directions, gamma)]), RoundContext(round_idx=1)).update
        assert torch.equal(b.update, real)
        # the server's aggregate is the exact one rounded to float32: off by at most an ulp per coordinate
        ulp = 2.0 ** -23 * float(real.double().norm())
        assert a.deviation == pytest.approx(float((real.double() - base.double()).norm()), rel=0, abs=ulp)
        assert a.against == pytest.approx(-float(real.double() @ base.double()) / float(base.double().norm()),
                                          rel=0, abs=ulp)
        assert torch.equal(defense._aggregates[0], centre)  # round 1 still centres at round 0's aggregate


def test_oracle_leaves_the_rounds_generator_untouched_and_draws_what_the_real_call_draws():
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=2)
    ctx = context(U, w, loss_fn, trigger, root, server_update)
    before = ctx.generator.get_state()
    known, base, directions = U[:N - F], U[:N - F].mean(0), -U[:N - F].std(0).expand(F, -1)
    for name in ("dnc", "heterofl"):  # both draw from the generator
        kept = Oracle(build_defense(name, **PARAMS[name]), known, base, directions, ctx)(0.8).kept
        real = build_defense(name, **PARAMS[name])(torch.cat([known, poisoned_rows(base, directions, 0.8)]), ctx)
        assert torch.equal(kept, real.kept)
        ctx.generator.set_state(before)
    assert torch.equal(ctx.generator.get_state(), before)


def test_a_users_rule_is_its_own_oracle_through_the_plain_call():
    U, *_ = federation(seed=4)
    keep_small = KeepSmallNorms(factor=2.0)  # a user's rule without the fast path
    oracle = Oracle(keep_small, U[:N - F], U[:N - F].mean(0), -U[:N - F].std(0).expand(F, -1), RoundContext())
    assert oracle.plain and not isinstance(keep_small, RowsDefense)
    attack = build_attack("adaptive")
    out = attack.attack(U[:N - F], U[N - F:], RoundContext(), defense=keep_small)
    assert attack.report["success"] == 1.0
    assert torch.equal(attack.prediction, keep_small(torch.cat([U[:N - F], out])).kept)


@pytest.mark.parametrize("name", RULES)
def test_adaptive_attack_finds_the_same_gamma_with_the_fast_and_the_plain_oracle(name):
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=5)
    ctx = context(U, w, loss_fn, trigger, root, server_update)
    outs = []
    for oracle in ("fast", "plain"):
        attack = build_attack("adaptive", gamma_init=3.0, tau=1e-3, oracle=oracle)
        outs.append((attack.attack(U[:N - F], U[N - F:], ctx, defense=rule(name)), attack.report, attack.prediction))
    (fast, rf, pf), (plain, rp, pp) = outs
    assert rf["gamma"] == rp["gamma"] and rf["oracle_calls"] == rp["oracle_calls"]
    assert torch.equal(fast, plain) and torch.equal(pf, pp)


# ------------------------------------------------------------------- oracle_agrees on both backends

@pytest.mark.parametrize("name", RULES)
def test_oracle_agrees_with_the_server_in_server_round(name):
    """Standalone backend: ServerRound poisons with the adaptive attack (rows in round order, the
    attackers interleaved) and records whether the oracle's predicted kept set is the server's."""
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=6)
    attack = build_attack("adaptive", gamma_init=3.0, tau=1e-4)
    server = ServerRound(rule(name), attack=attack, malicious_ids=MALICIOUS, seed=0, loss_fn=loss_fn,
                         trigger_set=trigger, validation_batch=root, server_update_fn=server_update)
    clients = torch.tensor([3, 17, 1, 6, 0, 2, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19])
    out = server(4, w, clients, U[clients], torch.full((N,), 34.0))
    assert out.metrics["oracle_agrees"] == 1.0
    # the same prediction by hand: the attack's mask (benign rows, then attackers) in round order
    assert attack.prediction is not None and out.metrics["attack_success"] in (0.0, 1.0)
    if out.metrics["attack_success"] == 1.0 and name not in KEEP_ALL:
        assert not out.result.kept[out.malicious].logical_not().any()  # all f poisoned rows kept, as predicted


def test_oracle_agrees_is_absent_for_partial_knowledge_and_other_attacks():
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=6)
    for attack in (build_attack("adaptive", knowledge="partial"), build_attack("min_max"), None):
        server = ServerRound(rule("fedavg"), attack=attack, malicious_ids=MALICIOUS, seed=0)
        out = server(0, w, torch.arange(N), U, None)
        assert "oracle_agrees" not in out.metrics


@pytest.mark.parametrize("name", ["heterofl", "zeno", "dnc", "multikrum", "fltrust", "median", "fedavg"])
def test_oracle_agrees_in_the_fedml_aggregator(name, tmp_path, fresh_fedml_singletons):
    """MPI backend: our FedML ServerAggregator's hooks (on_before_aggregation runs ServerRound) record
    ``oracle_agrees`` in the round's history."""
    import argparse

    import fedml_heterofl.fedml_bridge as bridge

    U, w, loss_fn, trigger, root, server_update, model = federation(seed=8)
    layout = ParamLayout(model)
    states = []
    for g in U:
        m = copy.deepcopy(model)
        layout.load(m, w + g)
        states.append((34, m.state_dict()))
    args = argparse.Namespace(
        federated_optimizer="FedAvg", random_seed=0, client_num_in_total=N, client_num_per_round=N, epochs=1,
        batch_size=8, learning_rate=0.1, client_optimizer="sgd", dataset="synthetic", round_idx=0,
        enable_defense=True, defense_type=name, defense_params=PARAMS.get(name, {}), enable_attack=True,
        attack_type="adaptive", attack_params={"gamma_init": 3.0, "tau": 1e-4}, byzantine_client_num=F)
    agg = bridge.HeteroFLServerAggregator(copy.deepcopy(model), args, trigger_set=trigger, validation_batch=root,
                                          root_data=root)
    agg.server.malicious_ids = torch.tensor(MALICIOUS)
    agg.on_before_aggregation(states)
    assert agg.history[-1]["oracle_agrees"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_zeno_removes_any_is_a_sufficient_test(seed):
    """Whenever Zeno's cheap test says a poisoned row is certainly removed, the full selection removes
    one; and the oracle's early answer (None) comes only for such γ."""
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=seed)
    known, base = U[:N - F], U[:N - F].mean(0)
    g = torch.Generator().manual_seed(seed)
    directions = -U[:N - F].std(0) * torch.sign(base) * (1 + 0.3 * torch.randn(F, U.shape[1], generator=g))
    ctx = context(U, w, loss_fn, trigger, root, server_update)
    zeno = rule("zeno")
    oracle = Oracle(zeno, known, base, directions, ctx)
    certain = 0
    for gamma in (0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0):
        full = oracle(gamma)
        early = oracle(gamma, stop_if_removed=True)
        all_kept = bool(full.kept[-F:].all())
        if early is None:
            certain += 1
            assert not all_kept, f"γ={gamma}: the early test claimed a removal the selection does not make"
        else:
            assert torch.equal(early.kept, full.kept) and early.deviation == full.deviation
    assert certain >= 2, "the early test should settle the clearly failing γ"


@pytest.mark.parametrize("rule", ["zeno", "heterofl", "fltrust", "multikrum"])
def test_fast_and_plain_oracle_send_the_same_updates_in_the_benchmarks_round(benchmark, rule):
    # The adaptive benchmark's small round (LR, n = 20, f = 4). For Zeno it once ended one τ-step apart
    # (γ 1.46999 plain, 1.47001 fast): the early exit scored the poisoned models one at a time and its
    # losses, rounded differently than the selection's batched ones, were reused by the selection.
    row = benchmark("adaptive").attack_cell(rule, 20, 4, True)
    assert row["plain_gamma"] == row["fast_gamma"] and row["same_updates"]


@pytest.mark.parametrize("per_model", [True, False])
def test_partial_poisoned_losses_are_kept_only_for_a_per_model_loss(per_model):
    # an early exit asks for the poisoned models one at a time, then the selection for all of them
    calls = []

    class Loss:
        def __call__(self, p, batch):
            calls.append(p.shape[0])
            return p.sum(dim=1) * batch

    loss = Loss()
    loss.per_model = per_model
    K, b, D = torch.randn(3, 10), torch.randn(10), torch.randn(4, 10)
    rows = AffineBasis(K, b, D).rows(0.5)
    w = torch.zeros(10)
    first = rows.losses(torch.tensor([3]), w, loss, 2, chunk=8)
    everything = rows.losses(torch.arange(7), w, loss, 2, chunk=8)
    expected = 2 * torch.cat([K, poisoned_rows(b, D, 0.5)]).sum(dim=1).double()
    assert torch.allclose(everything, expected) and torch.allclose(first, expected[3:4])
    # poisoned row 0 alone, then K once (3 rows), then: kept -> the 3 other poisoned rows; not kept -> all 4
    assert calls == ([1, 3, 3] if per_model else [1, 3, 4])


def test_first_equal_rows_by_hand():
    rows = torch.tensor([[1.0, 2.0], [3.0, 0.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0], [1.0, 2.0]])
    # rows 2 and 5 copy row 0, row 4 copies row 1; row 3 has row 0's sum but other entries
    assert first_equal_rows(rows).tolist() == [0, 1, 0, 3, 1, 0]
    # bit for bit: -0.0 and 0.0 compare equal as numbers, not as bits
    assert first_equal_rows(torch.tensor([[0.0, 1.0], [-0.0, 1.0]])).tolist() == [0, 1]
    # NaN equals nothing, itself included, so a row holding one stands alone
    assert first_equal_rows(torch.tensor([[float("nan"), 1.0], [float("nan"), 1.0]])).tolist() == [0, 1]


@pytest.mark.parametrize("per_model", [True, False])
def test_copies_are_evaluated_once_for_a_per_model_loss(per_model):
    """The poisoned copies an attack sends are one model: with a per-model loss each distinct row is
    evaluated once, and every row gets the loss of its own values."""
    seen = []

    class Loss:
        def __call__(self, p, batch):
            seen.append(p.clone())
            return (p ** 2).sum(dim=1) * batch

    loss = Loss()
    loss.per_model = per_model
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, 6, generator=g)
    U = torch.stack([a, b, a, a, c, b])
    w = torch.randn(6, generator=g)
    losses = model_losses(U, w, loss, 3.0, chunk=4)
    expected = torch.tensor([3.0 * float(((w + u) ** 2).sum()) for u in U], dtype=torch.float64)
    assert torch.allclose(losses, expected)
    assert losses[0] == losses[2] == losses[3] and losses[1] == losses[5]
    evaluated = torch.cat(seen)
    assert evaluated.shape[0] == (3 if per_model else 6)
    if per_model:
        assert torch.equal(evaluated, torch.stack([w + a, w + b, w + c]))


def test_model_loss_says_when_a_models_loss_is_per_model():
    from fedml_heterofl.models import ModelLoss, ParamLayout, build_model
    cnn, lr = build_model("cnn", 10), build_model("lr", 10)
    assert ModelLoss(cnn, ParamLayout(cnn)).per_model and not ModelLoss(lr, ParamLayout(lr)).per_model
