"""The server's round: fixed attackers' rows poisoned, defense context filled on demand, metrics."""
import pytest
import torch

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
