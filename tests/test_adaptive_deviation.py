"""``adaptive_deviation`` (issue 25): Eq. (7) searched with the exact oracle. The answers are derived
independently of the attack: closed forms on tiny rounds, the defense called on the rows sent, and the
paper's ``adaptive`` attack on the same round."""
import math

import pytest
import torch
from test_oracle import MALICIOUS, N, F, context, federation, rule

from fedml_heterofl.attack import REGISTRY as ATTACKS, build_attack
from fedml_heterofl.attack.adaptive_deviation import golden_section
from fedml_heterofl.defense import Defense, RoundContext, Selection, build_defense
from fedml_heterofl.defense.oracle import private_generator
from fedml_heterofl.record.metrics import aggregates_agree, kept_sets_agree
from fedml_heterofl.simulation.server_round import ServerRound


def against(update, mean):
    """``−⟨A, ḡ⟩/‖ḡ‖`` in float64, by hand."""
    mean = mean.double()
    return -float(update.double() @ mean) / float(mean.norm())


def sent_harm(defense, benign, sent, ctx):
    """The harm of the rows sent, from the defense's own call (not the oracle)."""
    real = defense(torch.cat([benign, sent]), private_generator(ctx))
    return against(real.update, benign.mean(dim=0)), real


def test_registered_and_validated():
    assert "adaptive_deviation" in ATTACKS
    for bad in ({"harm": "nope"}, {"directions": ("nope",)}, {"fractions": (0.0,)}, {"grid": (3, 1)},
                {"refine": -1}, {"mu": 2.0}, {"loss_samples": 0}, {"loss_samples": 2.5}):
        with pytest.raises(ValueError):
            build_attack("adaptive_deviation", **bad)
    with pytest.raises(ValueError, match="defense"):
        build_attack("adaptive_deviation").attack(torch.randn(5, 3), torch.randn(2, 3))


def test_golden_section_finds_the_maximum_of_a_unimodal_function():
    seen = []

    def fn(x):
        seen.append(x)
        return -(x - 0.3) ** 2

    golden_section(fn, 0.0, 1.0, 30)
    assert len(seen) == 30 and min(seen, key=lambda x: abs(x - 0.3)) == pytest.approx(0.3, abs=1e-5)
    assert all(0.0 <= x <= 1.0 for x in seen)


def test_against_fedavg_the_harm_grows_with_gamma_and_the_search_picks_its_largest():
    # plain mean: A(γ) = (Σ benign + f·(ḡ + γΔ))/n moves linearly against ḡ along Δ = −ḡ/‖ḡ‖
    g = torch.Generator().manual_seed(0)
    benign, own = 0.3 + 0.5 * torch.randn(16, 30, generator=g), torch.randn(4, 30, generator=g)
    mean, sigma = benign.mean(0), benign.std(0)
    defense = build_defense("fedavg", weighted=False)
    harms = []
    for hi in range(0, 5):
        attack = build_attack("adaptive_deviation", directions=("ipm",), grid=(-3, hi), epsilon=0.01)
        sent = attack.attack(benign, own, RoundContext(), defense=defense)
        # u·2^hi with u = ‖σ‖/‖−ḡ/‖ḡ‖‖ = ‖σ‖, or IPM's (1 + ε)‖ḡ‖ where larger
        largest = max(float(sigma.double().norm()) * 2.0 ** hi, 1.01 * float(mean.double().norm()))
        assert attack.report["gamma"] == pytest.approx(largest, rel=1e-6) and attack.report["poisoned"] == 4
        by_hand = against(torch.cat([benign, sent]).double().mean(0), mean)
        assert attack.report["harm"] == pytest.approx(by_hand, rel=1e-5)
        harms.append(by_hand)
    assert all(b > a for a, b in zip(harms, harms[1:]))


def squared_error(params, batch):
    """Mean squared error of the linear models ``params`` ``(k, d)`` on ``batch`` (a loss_fn)."""
    x, y = batch
    return ((x @ params.T - y[:, None]) ** 2).mean(dim=0)


def test_loss_harm_is_the_aggregated_models_loss_on_the_attackers_own_samples():
    # FedAvg, IPM's line only: the rows sent are ḡ − γḡ/‖ḡ‖, A(γ) = (Σ benign + f(ḡ − γḡ/‖ḡ‖))/n, and the
    # loss ℓ(w_t + A(γ)) on all 40 own samples is a convex quadratic in γ — its largest value over the γs
    # tried lies at the smallest or the largest of them (u·2^−3 and u·2^3 with u = ‖σ‖, or IPM's anchor)
    g = torch.Generator().manual_seed(1)
    benign, own = 0.3 + 0.5 * torch.randn(16, 30, generator=g), torch.randn(4, 30, generator=g)
    x, y, w_t = torch.randn(40, 30, generator=g), torch.randn(40, generator=g), torch.randn(30, generator=g)
    mean, sigma = benign.mean(0).double(), benign.std(0).double()

    def by_hand(gamma):
        sent = mean - gamma * mean / mean.norm()
        aggregate = (benign.double().sum(0) + 4 * sent) / 20
        return float(((x.double() @ (w_t.double() + aggregate) - y.double()) ** 2).mean())

    attack = build_attack("adaptive_deviation", harm="loss", loss_samples=40, directions=("ipm",),
                          fractions=(1.0,), grid=(-3, 3), epsilon=0.01)
    attack.own_data = (x, y)
    ctx = RoundContext(global_params=w_t, loss_fn=squared_error)
    sent = attack.attack(benign, own, ctx, defense=build_defense("fedavg", weighted=False))
    anchor, u = 1.01 * float(mean.norm()), float(sigma.norm())
    ends = (min(u / 8, anchor), max(u * 8, anchor))
    best = max(ends, key=by_hand)
    assert attack.report["gamma"] == pytest.approx(best, rel=1e-6) and attack.report["harm"] == pytest.approx(
        by_hand(best), rel=1e-5)
    aggregate = torch.cat([benign, sent]).double().mean(0)  # the rows actually sent
    assert attack.report["harm"] == pytest.approx(
        float(((x.double() @ (w_t.double() + aggregate) - y.double()) ** 2).mean()), rel=1e-5)
    # fewer samples: a seeded draw of them, the same in every call of the round
    few = build_attack("adaptive_deviation", harm="loss", loss_samples=5, directions=("ipm",), fractions=(1.0,))
    few.own_data = (x, y)
    twice = [few.attack(benign, own, ctx, defense=build_defense("fedavg")) for _ in range(2)]
    assert torch.equal(*twice)


def test_loss_harm_says_what_it_is_missing():
    attack = build_attack("adaptive_deviation", harm="loss")
    ctx = RoundContext(global_params=torch.zeros(3), loss_fn=squared_error)
    with pytest.raises(ValueError, match=r"needs the attackers' own training samples \(own_data\);"):
        attack.attack(torch.randn(8, 3), torch.randn(2, 3), ctx, defense=build_defense("fedavg"))
    attack.own_data = (torch.randn(4, 3), torch.randn(4))
    with pytest.raises(ValueError, match=r"needs the model's loss \(ctx.loss_fn\) and the global model"):
        attack.attack(torch.randn(8, 3), torch.randn(2, 3), RoundContext(), defense=build_defense("fedavg"))


def test_the_server_round_hands_the_attack_the_attackers_own_rows():
    from fedml_heterofl.simulation.workload import attackers_data

    parts = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3, 4])]
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    data = attackers_data(parts, (0, 2), lambda ix: (x[ix], y[ix]))
    assert torch.equal(data[1], torch.tensor([0, 1, 3, 4])) and torch.equal(data[0], x[[0, 1, 3, 4]])
    assert attackers_data(parts, (), lambda ix: (x[ix], y[ix])) is None
    attack = build_attack("adaptive_deviation", harm="loss")
    ServerRound(build_defense("fedavg"), attack=attack, malicious_ids=(0, 2), attackers_data=data)
    assert attack.own_data is data
    ServerRound(build_defense("fedavg"), attack=attack, malicious_ids=(0, 2))  # none given: what it had stays
    assert attack.own_data is data


def test_against_the_median_it_finds_the_closed_form_optimum():
    # coordinate-wise median of 5 rows with 2 attackers: whatever they send, the median of a coordinate
    # lies between the smallest and the largest benign value, and reaches either end when both
    # attackers go beyond it. −⟨A, ḡ⟩ is largest at A_j = min_i b_ij where ḡ_j > 0, max where ḡ_j < 0.
    benign = torch.tensor([[1.0, -2.0], [2.0, -1.0], [4.0, -3.0]])
    own = torch.tensor([[3.0, -2.0], [2.0, -2.0]])
    optimum = torch.tensor([1.0, -1.0])  # ḡ = (7/3, −2)
    attack = build_attack("adaptive_deviation")
    sent = attack.attack(benign, own, RoundContext(), defense=build_defense("median"))
    harm, real = sent_harm(build_defense("median"), benign, sent, RoundContext())
    assert torch.allclose(real.update, optimum)
    assert harm == pytest.approx(-13 / math.sqrt(85), rel=1e-6)  # −(7/3 + 2)/‖(7/3, −2)‖
    assert attack.report["harm"] == pytest.approx(harm, rel=1e-6)


@pytest.mark.parametrize("oracle", ["plain", "fast"])
@pytest.mark.parametrize("name", ["fedavg", "multikrum", "heterofl", "dnc", "median", "zeno", "trimmed_mean",
                                  "centered_clipping"])
def test_never_weaker_than_the_papers_adaptive_attack_on_the_same_round(name, oracle):
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=5)
    ctx = context(U, w, loss_fn, trigger, root, server_update)
    benign, own = U[:N - F], U[N - F:]
    paper = build_attack("adaptive", oracle=oracle)
    paper_sent = paper.attack(benign, own, ctx, defense=rule(name))
    ours = build_attack("adaptive_deviation", oracle=oracle)
    our_sent = ours.attack(benign, own, ctx, defense=rule(name))
    assert ours.report["paper_gamma"] == paper.report["gamma"]  # the same Alg. 7 candidate
    theirs, _ = sent_harm(rule(name), benign, paper_sent, ctx)
    mine, real = sent_harm(rule(name), benign, our_sent, ctx)
    assert mine >= theirs
    assert mine == pytest.approx(ours.report["harm"], rel=1e-5, abs=1e-9)
    assert torch.equal(ours.prediction, real.kept) and aggregates_agree(real.update, ours.predicted_update)


class SybilFilter(Defense):
    """A user's rule (plain-call oracle): remove every row whose direction another row repeats
    (cosine > 0.999, FoolsGold's idea), then average."""

    name = "test_sybil_filter"

    def select(self, updates, ctx):
        unit = updates / updates.norm(dim=1, keepdim=True)
        cos = unit @ unit.T
        cos.fill_diagonal_(0)
        kept = ~(cos > 0.999).any(dim=1)
        return Selection(kept, weights=kept.float() / kept.sum().clamp_min(1))


def crafted_round():
    g = torch.Generator().manual_seed(3)
    return 0.5 + torch.randn(12, 20, generator=g), torch.randn(4, 20, generator=g)


def test_the_poisoned_count_changes_the_outcome_on_a_crafted_round():
    # IPM's identical copies are all removed as sybils when 2 or more are sent; one alone passes
    benign, own = crafted_round()
    harms = {}
    for fractions in ((1.0,), (1.0, 0.25)):
        attack = build_attack("adaptive_deviation", directions=("ipm",), fractions=fractions)
        sent = attack.attack(benign, own, RoundContext(), defense=SybilFilter())
        harms[fractions], real = sent_harm(SybilFilter(), benign, sent, RoundContext())
        assert attack.report["harm"] == pytest.approx(harms[fractions], rel=1e-6)
    # the one poisoned row passes; the three others send ḡ, repeat each other and are removed
    assert attack.report["poisoned"] == 1 and bool(real.kept[-4]) and not real.kept[-3:].any()
    assert harms[(1.0, 0.25)] > harms[(1.0,)] + 1.0
    assert harms[(1.0,)] == pytest.approx(against(benign.mean(0), benign.mean(0)), rel=1e-6)  # all removed


def test_the_direction_changes_the_outcome_on_a_crafted_round():
    # with all f poisoned, IPM's identical copies are removed; Alg. 7's μ-flipped copies of −ḡ/‖ḡ‖ are not
    benign, own = crafted_round()
    harms = {}
    for directions in (("ipm",), ("ipm", "unit_vec")):
        attack = build_attack("adaptive_deviation", directions=directions, fractions=(1.0,))
        sent = attack.attack(benign, own, RoundContext(), defense=SybilFilter())
        harms[directions], real = sent_harm(SybilFilter(), benign, sent, RoundContext())
    assert attack.report["direction"] == "unit_vec" and real.kept.all()
    assert harms[("ipm", "unit_vec")] > harms[("ipm",)] + 1.0


@pytest.mark.parametrize("name", ["fedavg", "heterofl", "multikrum", "dnc", "median", "zeno", "fltrust"])
def test_deviation_agrees_in_server_round(name):
    """The server's real aggregate is the oracle's prediction (attackers interleaved in round order)."""
    U, w, loss_fn, trigger, root, server_update, _ = federation(seed=6)
    attack = build_attack("adaptive_deviation", refine=2, fractions=(1.0, 0.4))
    server = ServerRound(rule(name), attack=attack, malicious_ids=MALICIOUS, seed=0, loss_fn=loss_fn,
                         trigger_set=trigger, validation_batch=root, server_update_fn=server_update)
    clients = torch.tensor([3, 17, 1, 6, 0, 2, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19])
    out = server(4, w, clients, U[clients], torch.full((N,), 34.0))
    assert out.metrics["deviation_agrees"] == 1.0 and out.metrics["oracle_agrees"] == 1.0
    assert out.metrics["attack_direction"] in ("unit_vec", "std", "sign", "ipm", "alie")
    assert 1 <= out.metrics["attack_poisoned"] <= F
    # the recorded harm is the real aggregate's, by hand
    benign = U[[i for i in range(N) if i not in MALICIOUS]]
    assert out.metrics["attack_harm"] == pytest.approx(against(out.result.update, benign.mean(0)), rel=1e-4, abs=1e-7)


def test_kept_sets_agree_up_to_identical_rows():
    U = torch.tensor([[1.0, 2.0], [3.0, 4.0], [3.0, 4.0], [5.0, 6.0]])
    mask = lambda *b: torch.tensor(b, dtype=torch.bool)  # noqa: E731
    assert kept_sets_agree(mask(1, 1, 0, 1), mask(1, 0, 1, 1), U)  # rows 1 and 2 are the same row
    assert not kept_sets_agree(mask(1, 1, 0, 1), mask(0, 1, 1, 1), U)  # row 0 is not row 2
    assert not kept_sets_agree(mask(1, 1, 0, 0), mask(1, 0, 1, 1), U)


def test_aggregates_agree_tolerance():
    a = torch.randn(100)
    assert aggregates_agree(a, a.clone()) and aggregates_agree(torch.zeros(3), torch.zeros(3))
    assert aggregates_agree(a, a * (1 + 1e-6)) and not aggregates_agree(a, a * 1.01)
    assert not aggregates_agree(a, a[:50])
