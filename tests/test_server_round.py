"""The server's round: fixed attackers' rows poisoned, defense context filled on demand, metrics."""
import pytest
import torch

from fedml_heterofl.attack import build_attack
from fedml_heterofl.defense.fedavg import FedAvg
from fedml_heterofl.defense.heterofl import HeteroFL
from fedml_heterofl.simulation.server_round import ServerRound


class Negate:
    """A stand-in model attack: each attacker sends minus its honest update, times 20."""

    def __init__(self):
        self.calls = []
        self.report = {}

    def attack(self, benign, own, ctx, defense=None):
        self.calls.append((benign.shape[0], own.shape[0], defense))
        self.report = {"scale": 20.0}
        return -20.0 * own


def test_attackers_rows_are_poisoned_and_removal_is_measured():
    g = torch.Generator().manual_seed(0)
    U = torch.nn.functional.normalize(torch.randn(10, 50, generator=g), dim=1)
    U = U * (1 + 0.1 * torch.rand(10, 1, generator=g))  # norms in [1, 1.1]
    ids = torch.arange(100, 110)
    attack = Negate()
    defense = HeteroFL(steps=(4,))
    server = ServerRound(defense, attack=attack, malicious_ids={103, 107, 999}, seed=1)
    w = torch.zeros(50)
    out = server(5, w, ids, U)
    assert attack.calls == [(8, 2, defense)]  # 8 benign known, 2 own (999 is not in this round)
    assert out.malicious.tolist() == [i in (3, 7) for i in range(10)]
    assert torch.equal(out.updates[3], -20 * U[3]) and torch.equal(out.updates[0], U[0])
    # ratios of honest norms to the median are < 1.1, so m~ + s~ < 1.1 and the bound < 8.8;
    # the attackers' ratios are > 20 / 1.1 > 18: both removed
    assert out.metrics["removed_malicious"] == 2 and out.metrics["removal_success_rate"] == 1.0
    assert out.metrics["attack_scale"] == 20.0
    assert torch.allclose(out.params, w + out.result.update)
    assert U.data_ptr() != out.updates.data_ptr()  # the caller's updates are left as they were


def test_context_fills_only_what_the_defense_requires():
    calls = []

    def server_update(round_idx, w):
        calls.append(round_idx)
        return torch.ones_like(w)

    server = ServerRound(HeteroFL(steps=(1, 2)), server_update_fn=server_update, seed=3)
    ctx = server.context(2, torch.zeros(4), torch.arange(3))
    assert ctx.server_update is None and ctx.loss_fn is None and calls == []
    # the generator depends on (seed, round) only
    a = torch.rand(3, generator=server.context(2, torch.zeros(4), torch.arange(3)).generator)
    b = torch.rand(3, generator=ctx.generator)
    c = torch.rand(3, generator=server.context(3, torch.zeros(4), torch.arange(3)).generator)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_missing_context_is_a_clear_error():
    server = ServerRound(HeteroFL(), seed=0)
    with pytest.raises(ValueError, match="heterofl.*loss_fn, trigger_set"):
        server(0, torch.zeros(3), torch.arange(4), torch.randn(4, 3))


def test_non_finite_rows_are_left_to_the_defense_and_the_attack_sees_the_finite_ones(caplog):
    # Near divergence some clients' training overflows. Attackers {3, 7}: row 7 (an attacker) and
    # row 2 (benign) are NaN. The attack gets the 7 finite benign rows and attacker 3's own row;
    # row 7 is sent as it is; FedAvg removes rows 2 and 7 and averages the other 8.
    g = torch.Generator().manual_seed(0)
    U = torch.randn(10, 4, generator=g)
    U[2, 1] = U[7, 0] = float("nan")
    attack = Negate()
    server = ServerRound(FedAvg(), attack=attack, malicious_ids={3, 7}, seed=0)
    w = torch.zeros(4)
    out = server(3, w, torch.arange(10), U)
    assert attack.calls[0][:2] == (7, 1) and "rows [2, 7] of the round's updates are non-finite" in caplog.text
    assert torch.equal(out.updates[3], -20 * U[3]) and torch.isnan(out.updates[7, 0])
    keep = [0, 1, 3, 4, 5, 6, 8, 9]
    expected = torch.cat([U[[0, 1]], -20 * U[[3]], U[[4, 5, 6, 8, 9]]]).mean(dim=0)
    assert out.metrics["removed"] == 2 and torch.allclose(out.params, expected, atol=1e-6)
    assert sorted(keep) == out.result.kept.nonzero().flatten().tolist()
    # Every row non-finite (the global model diverged): the attack is not called, its report is
    # emptied, every row is removed and w stays as it was, so the run goes on.
    out = server(4, w + 1, torch.arange(10), torch.full((10, 4), float("inf")))
    assert len(attack.calls) == 1 and attack.report == {} and out.metrics["all_removed"]
    assert torch.equal(out.params, w + 1)


@pytest.mark.parametrize("name", ["sign_flip", "min_max", "adaptive"])
def test_real_attacks_run_beside_non_finite_rows(name):
    g = torch.Generator().manual_seed(1)
    U = torch.randn(12, 6, generator=g)
    U[[1, 5]] = float("nan")  # one benign, one attacker
    attack = build_attack(name)
    server = ServerRound(FedAvg(), attack=attack, malicious_ids={0, 5, 9}, seed=0)
    out = server(0, torch.zeros(6), torch.arange(12), U)
    assert out.metrics["removed"] == 2 and bool(torch.isfinite(out.params).all())
    assert not torch.equal(out.updates[[0, 9]], U[[0, 9]]) and torch.equal(out.updates[3], U[3])
