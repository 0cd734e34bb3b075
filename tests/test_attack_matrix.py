"""Every attack against every defense: one round of a small synthetic federation through
:class:`ServerRound`, with the detection numbers reported (printed with ``pytest -s``)."""
import pytest
import torch

from fedml_heterofl.attack import REGISTRY as ATTACKS, DataAttack, build_attack
from fedml_heterofl.defense import REGISTRY as DEFENSES, build_defense
from fedml_heterofl.models import ParamLayout, batched_loss
from fedml_heterofl.simulation.local_training import client_seed, local_sgd
from fedml_heterofl.simulation.server_round import ServerRound

N, F, L, FEATURES = 12, 3, 3, 6
MALICIOUS = (2, 5, 9)


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(L, FEATURES, generator=g)
    clients = []
    for i in range(N):
        y = torch.randint(0, L, (30,), generator=g)
        y[: 10] = i % L  # some label skew
        clients.append((centres[y] + torch.randn(30, FEATURES, generator=g), y))
    trigger = (3 * torch.randn(4, FEATURES, generator=g), torch.full((4,), L))
    root = (centres[torch.arange(L).repeat(5)] + torch.randn(15, FEATURES, generator=g), torch.arange(L).repeat(5))
    return clients, trigger, root


PARAMS = {"multikrum": {"f": F}, "dnc": {"f": F}, "zeno": {"b": F}, "heterofl": {"lam": -50.0},
          "trimmed_mean": {"f": F}, "bulyan": {"f": 2}}  # Bulyan: n = 12 >= 4f + 3
ATTACK_PARAMS = {"label_flip": {"num_classes": L}, "adaptive": {"gamma_init": 2.0, "tau": 1e-2}}


@pytest.mark.parametrize("defense_name", sorted(DEFENSES))
@pytest.mark.parametrize("attack_name", sorted(ATTACKS))
def test_every_attack_against_every_defense(attack_name, defense_name):
    clients, trigger, root = problem()
    model = torch.nn.Linear(FEATURES, L + 1)
    layout = ParamLayout(model)
    w = layout.flatten(model)
    attack = build_attack(attack_name, **ATTACK_PARAMS.get(attack_name, {}))
    defense = build_defense(defense_name, **PARAMS.get(defense_name, {}))
    rows = []
    for i, (x, y) in enumerate(clients):
        if isinstance(attack, DataAttack) and i in MALICIOUS:
            x, y = attack.poison(x, y)
        x, y = torch.cat([x, trigger[0]]), torch.cat([y, trigger[1]])
        rows.append(local_sgd(model, layout, w, x, y, epochs=1, batch_size=8, lr=0.1, seed=client_seed(0, 0, i)))
    U = torch.stack(rows)
    server = ServerRound(
        defense, attack=None if isinstance(attack, DataAttack) else attack, malicious_ids=MALICIOUS, seed=0,
        loss_fn=lambda p, b: batched_loss(model, layout, p, b), trigger_set=trigger, validation_batch=root,
        server_update_fn=lambda t, w_t: local_sgd(model, layout, w_t, *root, epochs=1, batch_size=8, lr=0.1,
                                                  seed=client_seed(0, t, 10**6)))
    out = server(0, w, torch.arange(N), U, torch.full((N,), 34.0))
    m = out.metrics
    assert torch.isfinite(out.params).all() and out.params.shape == w.shape
    assert out.malicious.nonzero().flatten().tolist() == list(MALICIOUS)
    assert m["removed"] == m["removed_malicious"] + m["removed_benign"] == int((~out.result.kept).sum())
    assert 0 <= m["removed_malicious"] <= F and m["tpr"] == m["removed_malicious"] / F
    if not isinstance(attack, DataAttack):
        assert not torch.equal(out.updates[out.malicious], U[out.malicious]), "model attack left updates as they were"
    print(f"\n{attack_name:>10} vs {defense_name:<9}: removed attackers {m['removed_malicious']}/{F}, "
          f"removed honest {m['removed_benign']}/{N - F}")
