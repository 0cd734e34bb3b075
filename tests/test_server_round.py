"""The server's round: fixed attackers' rows poisoned, defense context filled on demand, metrics."""
import pytest
import torch

from fedml_heterofl.defense.fedavg import FedAvg
from fedml_heterofl.defense.heterofl import HeteroFL
from fedml_heterofl.simulation.server_round import ServerRound, any_finite_row


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


def test_a_diverged_round_skips_the_attack_and_removes_every_update(caplog):
    # Local training that overflowed from w_t: no finite row to craft an attack from. The attack is
    # not called, FedAvg removes all 6 malformed rows and w stays as it was (the run goes on).
    U = torch.full((6, 4), float("nan"))
    U[1, 0] = float("inf")
    attack = Negate()
    server = ServerRound(FedAvg(), attack=attack, malicious_ids={2, 4}, seed=0)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    out = server(3, w, torch.arange(6), U)
    assert attack.calls == [] and "every update is non-finite" in caplog.text
    assert torch.equal(out.params, w) and out.metrics["all_removed"] and out.metrics["removed"] == 6
    # one finite row is enough for the attack to run (a real attack's own input checks then apply)
    U[0] = 1.0
    server(3, w, torch.arange(6), U)
    assert len(attack.calls) == 1 and attack.calls[0][:2] == (4, 2)


def test_any_finite_row_tells_overflowing_norms_from_non_finite_entries():
    big = torch.full((2, 8), 3e38)  # finite entries whose squared norm overflows float32
    assert bool(torch.isinf(torch.linalg.vector_norm(big, dim=1)).all()) and any_finite_row(big)
    big[0, 0], big[1, 3] = float("nan"), float("-inf")
    assert not any_finite_row(big)
