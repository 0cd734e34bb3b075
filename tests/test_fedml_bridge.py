"""FedML bridge: offline init, registration with FedMLDefender/FedMLAttacker, the aggregator and
trainer hooks, state_dict <-> flat conversion. FedML is imported once for the whole module."""
import argparse
import builtins
import copy
import logging
import math
import os
import socket
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedml
from fedml.core import ServerAggregator
from fedml.core.security.defense.krum_defense import KrumDefense
from fedml.core.security.fedml_attacker import FedMLAttacker
from fedml.core.security.fedml_defender import FedMLDefender

import fedml_heterofl.fedml_bridge as bridge
from fedml_heterofl.defense import REGISTRY as DEFENSES
from fedml_heterofl.models import ParamLayout
from fedml_heterofl.simulation.local_training import client_seed, local_sgd

SQRT2 = math.sqrt(2.0)


pytestmark = pytest.mark.usefixtures("fresh_fedml_singletons")  # tests/conftest.py


def fedml_args(**kw):
    base = dict(federated_optimizer="FedAvg", random_seed=0, client_num_in_total=5, client_num_per_round=5,
                epochs=1, batch_size=4, learning_rate=0.1, client_optimizer="sgd", dataset="synthetic")
    base.update(kw)
    return argparse.Namespace(**base)


class PlainAggregator(ServerAggregator):
    """A FedML ServerAggregator that leaves every hook to FedML (security through its singletons)."""

    def get_model_params(self):
        return copy.deepcopy(self.model.state_dict())

    def set_model_params(self, model_parameters):
        self.model.load_state_dict(model_parameters)

    def test(self, test_data, device, args):
        return None


def five_updates():
    """Rows e1, e2, e3, (1,1,0)/1 and (100,0,0) as FedML entries of a bias-free Linear(3, 1) at w_t = 0."""
    rows = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0], [100.0, 0, 0]]
    return [(10, {"weight": torch.tensor([r])}) for r in rows]


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------

def test_fedml_defender_accepts_heterofl_and_runs_it_in_fedml_hooks():
    model = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(model.weight)
    args = fedml_args(enable_defense=True, defense_type="heterofl", defense_params={"steps": [4]})
    FedMLDefender.get_instance().init(args)  # FedML's own entry point
    assert isinstance(FedMLDefender.get_instance().defender, bridge.DefenseAdapter)
    agg = PlainAggregator(model, args)  # FedML's ServerAggregator.__init__ re-inits the singletons
    models = five_updates()
    kept, idxs = agg.on_before_aggregation(models)
    # Step 4 by hand: norms (1, 1, 1, √2, 100), median 1, ratios D = norms; the 2 smallest ratios
    # have mean 1 and std 0, bound 8·(1 + 0) = 8, so only the 100 is removed.
    assert idxs == [0, 1, 2, 3] and [m is models[i] for i, m in enumerate(kept)] == [True] * 4
    assert FedMLDefender.get_instance().get_malicious_client_idxs() == [4]
    new = agg.on_after_aggregation(agg.aggregate(kept))
    # corrective aggregation: every kept update rescaled to the mean norm m = (3 + √2)/4, then averaged
    m = (3 + SQRT2) / 4
    expected = m / 4 * torch.tensor([1 + 1 / SQRT2, 1 + 1 / SQRT2, 1.0])
    assert torch.allclose(new["weight"][0], expected, atol=1e-6)


def test_fedml_builtin_krum_still_runs_beside_ours():
    model = nn.Linear(3, 1, bias=False)
    args = fedml_args(enable_defense=True, defense_type="krum", byzantine_client_num=1, krum_param_m=1)
    agg = PlainAggregator(model, args)
    assert isinstance(FedMLDefender.get_instance().defender, KrumDefense)
    models = five_updates()
    kept, _ = agg.on_before_aggregation(models)
    # Krum scores (f = 1, sum of the n - f - 2 = 2 smallest squared distances), by hand:
    # e1: 1 + 2 = 3, e2: 1 + 2 = 3, e3: 2 + 2 = 4, (1,1,0): 1 + 1 = 2, (100,0,0): 9801 + 9802.
    assert len(kept) == 1 and kept[0] is models[3]
    # the same singleton switches back to ours, and FedML still rejects names nobody knows
    FedMLDefender.get_instance().init(fedml_args(enable_defense=True, defense_type="heterofl",
                                                 defense_params={"steps": [4]}))
    assert FedMLDefender.get_instance().is_defense_on_aggregation()
    with pytest.raises(Exception, match="defense_type is not defined"):
        FedMLDefender.get_instance().init(fedml_args(enable_defense=True, defense_type="no_such_rule"))


def test_multikrum_resolves_to_ours_and_krum_to_fedml():
    if "multikrum" not in DEFENSES:
        pytest.skip("fedml_heterofl's multikrum is not registered yet")
    defender = FedMLDefender.get_instance()
    defender.init(fedml_args(enable_defense=True, defense_type="multikrum", byzantine_client_num=1,
                             enable_attack=False))
    assert isinstance(defender.defender, bridge.DefenseAdapter) and defender.defender.defense.name == "multikrum"
    defender.init(fedml_args(enable_defense=True, defense_type="krum", byzantine_client_num=1))
    assert isinstance(defender.defender, KrumDefense)


def test_registration_is_idempotent_and_wraps_fedml_without_editing_it():
    bridge.register_with_fedml()
    bridge.register_with_fedml()
    original = FedMLDefender.init.__wrapped__
    assert not hasattr(original, "_fedml_heterofl_wrapped")  # wrapped exactly once
    assert original.__module__ == "fedml.core.security.fedml_defender"
    assert FedMLAttacker.is_model_attack.__wrapped__.__module__ == "fedml.core.security.fedml_attacker"


def test_disabled_defense_leaves_fedml_disabled():
    defender = FedMLDefender.get_instance()
    defender.init(fedml_args(enable_defense=True, defense_type="heterofl"))
    defender.init(fedml_args(enable_defense=False))
    assert not defender.is_defense_enabled()
    assert not defender.is_defense_before_aggregation() and not defender.is_defense_on_aggregation()


# --------------------------------------------------------------------------------------------
# Offline init
# --------------------------------------------------------------------------------------------

def test_init_is_offline_keeps_print_and_logging_and_homes_fedml_in_run_dir(tmp_path, monkeypatch):
    attempts = []

    def no_network(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    write, printer, home = sys.stdout.write, builtins.print, os.environ.get("HOME")
    args = argparse.Namespace(training_type="simulation", backend="sp", random_seed=3, using_mlops=False,
                              enable_tracking=False, enable_wandb=False, client_num_per_round=2)
    out = bridge.init(args, tmp_path / "run")
    assert out is args and attempts == []
    assert root.handlers == handlers and root.level == level
    assert sys.stdout.write == write and builtins.print is printer and os.environ.get("HOME") == home
    assert (tmp_path / "run" / ".fedml" / "global_services" / ".env").is_file()
    assert args.worker_num == 2 and args.rank == 0  # FedML's loader defaults filled in

    calls = []
    monkeypatch.setattr(fedml, "init", lambda *a, **k: calls.append(a))
    assert bridge.init(args, tmp_path / "elsewhere") is args and calls == []  # idempotent
    with pytest.raises(ValueError, match="run_dir"):
        bridge.init(argparse.Namespace(), "")


# --------------------------------------------------------------------------------------------
# state_dict <-> flat
# --------------------------------------------------------------------------------------------

def bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_codec_matches_param_layout_and_averages_buffers_by_sample_count():
    model = bn_model()
    codec = bridge.StateCodec.for_model(model)
    layout = ParamLayout(model)
    assert codec.d == layout.d == 3 * 2 + 2 + 2 + 2
    assert codec.params.names == bridge.StateCodec(model.state_dict()).params.names  # FedML's naming rule
    assert torch.equal(codec.flatten(model.state_dict()), layout.flatten(model))
    a, b = copy.deepcopy(model.state_dict()), copy.deepcopy(model.state_dict())
    a["1.running_mean"], b["1.running_mean"] = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    a["1.num_batches_tracked"], b["1.num_batches_tracked"] = torch.tensor(2), torch.tensor(5)
    buffers = codec.average_buffers([a, b], torch.tensor([1.0, 3.0]))
    # 1/4·(1, 2) + 3/4·(3, 6) = (2.5, 5); 1/4·2 + 3/4·5 = 4.25 -> 4 (integer buffer, rounded)
    assert torch.allclose(buffers["1.running_mean"], torch.tensor([2.5, 5.0]))
    assert buffers["1.num_batches_tracked"].dtype == torch.int64 and int(buffers["1.num_batches_tracked"]) == 4
    flat = torch.arange(codec.d, dtype=torch.float32)
    state = codec.state(flat, buffers)
    assert list(state) == list(model.state_dict())
    clone = bn_model(1)
    clone.load_state_dict(state)
    assert torch.equal(layout.flatten(clone), flat)
    del a["0.bias"]
    with pytest.raises(ValueError, match="0.bias"):
        codec.flatten(a)


# --------------------------------------------------------------------------------------------
# Aggregator hooks
# --------------------------------------------------------------------------------------------

def client_states(model, deltas, means, tracked):
    """Client state_dicts w_t + g_i with chosen BatchNorm running means and batch counters."""
    layout = ParamLayout(model)
    w_t = layout.flatten(model)
    states = []
    for g, mean, count in zip(deltas, means, tracked):
        m = copy.deepcopy(model)
        layout.load(m, w_t + g)
        m[1].running_mean.copy_(torch.tensor(mean))
        m[1].num_batches_tracked.fill_(count)
        states.append(m.state_dict())
    return states


def test_aggregator_hooks_defend_aggregate_buffers_and_record_history():
    model = bn_model()
    d = ParamLayout(model).d
    g = torch.Generator().manual_seed(5)
    deltas = [torch.randn(d, generator=g) for _ in range(4)] + [500 * torch.ones(d)]
    counts = [10, 20, 30, 40, 50]
    means = [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [99.0, 99.0]]
    states = client_states(model, deltas, means, [1, 2, 3, 4, 5])
    models = list(zip(counts, states))
    args = fedml_args(enable_defense=True, defense_type="heterofl", defense_params={"steps": [4]}, round_idx=2)
    agg = bridge.HeteroFLServerAggregator(copy.deepcopy(model), args)
    with pytest.raises(RuntimeError, match="on_before_aggregation"):
        agg.aggregate(models)
    kept, idxs = agg.on_before_aggregation(models)
    assert idxs == [0, 1, 2, 3] and all(k is models[i] for i, k in zip(idxs, kept))
    new = agg.on_after_aggregation(agg.aggregate(kept))

    # float64 reference: rescale the 4 kept deltas to their mean norm and average them (Alg. 6);
    # buffers: sample-weighted mean over the kept clients only.
    norms = [float(x.double().norm()) for x in deltas[:4]]
    mean_norm = sum(norms) / 4
    update = sum(x.double() * (mean_norm / n) for x, n in zip(deltas[:4], norms)) / 4
    layout = ParamLayout(model)
    ref = copy.deepcopy(model)
    agg.set_model_params(new)
    assert torch.allclose(layout.flatten(agg.model).double(), layout.flatten(ref).double() + update, atol=1e-5)
    # running mean: (10·1 + 20·2 + 30·3 + 40·4)/100 = 3; batches: (10 + 40 + 90 + 160)/100 = 3
    assert torch.allclose(new["1.running_mean"], torch.tensor([3.0, 0.0]))
    assert int(new["1.num_batches_tracked"]) == 3
    record = agg.history[-1]
    assert record["round"] == 2 and record["kept"] == [0, 1, 2, 3]
    assert record["removed"] == 1 and record["removed_magnitude_rectification"] == 1

    x = torch.randn(6, 3, generator=g)
    metrics = agg.test(DataLoader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=4), "cpu", args)
    assert record["test_acc"] == metrics["test_acc"] and metrics["test_total"] == 6


def test_aggregator_needs_client_ids_when_not_every_client_takes_part():
    model = bn_model()
    d = ParamLayout(model).d
    states = client_states(model, [torch.ones(d), -torch.ones(d), 2 * torch.ones(d)], [[0, 0]] * 3, [1] * 3)
    models = [(5, s) for s in states]
    args = fedml_args(enable_defense=True, defense_type="heterofl", defense_params={"steps": [4]},
                      client_num_in_total=10)
    agg = bridge.HeteroFLServerAggregator(copy.deepcopy(model), args)
    with pytest.raises(ValueError, match="client_num_in_total=10"):
        agg.on_before_aggregation(models)
    agg.round_client_ids = [7, 2, 9]
    agg.on_before_aggregation(models)
    assert agg.history[-1]["kept"] == [7, 2, 9]


def test_aggregator_fails_at_construction_when_heterofl_lacks_the_trigger_set():
    args = fedml_args(enable_defense=True, defense_type="heterofl")  # all four steps
    with pytest.raises(ValueError, match="trigger_set"):
        bridge.HeteroFLServerAggregator(bn_model(), args)


# --------------------------------------------------------------------------------------------
# Client trainer
# --------------------------------------------------------------------------------------------

def client_data(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return x, y


def reference_update(model, x, y, args, client_id, round_idx):
    m = copy.deepcopy(model)
    layout = ParamLayout(m)
    return local_sgd(m, layout, layout.flatten(m), x, y, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.learning_rate, seed=client_seed(args.random_seed, round_idx, client_id))


def test_trainer_appends_the_trigger_set_and_seeds_by_round_and_client():
    model = nn.Linear(3, 3)
    x, y = client_data()
    trigger = (torch.randn(4, 3), torch.full((4,), 2))
    args = fedml_args(round_idx=1)
    trainer = bridge.HeteroFLClientTrainer(copy.deepcopy(model), args, trigger_set=trigger)
    trainer.set_id(4)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    trainer.update_dataset(loader, loader, len(y))
    got = trainer.train(loader, "cpu", args)
    expected = reference_update(model, torch.cat([x, trigger[0]]), torch.cat([y, trigger[1]]), args, 4, 1)
    assert torch.equal(got, expected)
    assert torch.equal(bridge.StateCodec.for_model(model).flatten(trainer.get_model_params()),
                       ParamLayout(model).flatten(model) + got)
    assert not torch.equal(expected, reference_update(model, torch.cat([x, trigger[0]]),
                                                      torch.cat([y, trigger[1]]), args, 3, 1))


def test_trainer_trains_on_fedml_poisoned_data_although_fedml_passes_the_clean_data():
    # FedML's cross-silo FedMLTrainer.train() passes the silo's original data to train(); FedML's own
    # label flipping (ratio 1.0 poisons every call) must still reach training. FedML replaces the
    # classes one after the other, so a swap [0, 1] -> [1, 0] would end with every label 0; we map 0 -> 1.
    # Its counter is incremented before the round check, so with comm_round=1 it never poisons: use 2.
    model = nn.Linear(3, 2)
    x, y = client_data()
    args = fedml_args(enable_attack=True, attack_type="label_flipping", original_class_list=[0],
                      target_class_list=[1], ratio_of_poisoned_client=1.0, comm_round=2,
                      client_num_per_round=1, round_idx=0)
    trainer = bridge.HeteroFLClientTrainer(copy.deepcopy(model), args)
    clean = DataLoader(TensorDataset(x, y), batch_size=4)
    trainer.update_dataset(clean, clean, len(y))
    got = trainer.train(clean, "cpu", args)
    assert bool((y == 0).any())
    assert torch.equal(got, reference_update(model, x, torch.ones_like(y), args, 0, 0))
    assert not torch.equal(got, reference_update(model, x, y, args, 0, 0))


def test_evaluate_counts_correct_predictions_and_mean_cross_entropy():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1])
    out = bridge.evaluate(model, (x, y))
    # logits = x; predictions 0, 1, 0, 1 -> 3 of 4 correct. CE of logits (a, b) for label 1 is
    # log(1 + e^(a-b)): log(1+e^-1), log(1+e^-1), log(1+e^1), log(1+e^-2) (first row: label 0, same as row 2)
    ce = [math.log1p(math.exp(-1)), math.log1p(math.exp(-1)), math.log1p(math.exp(1)), math.log1p(math.exp(-2))]
    assert out["test_correct"] == 3 and out["test_total"] == 4 and out["test_acc"] == pytest.approx(0.75)
    assert out["test_loss"] == pytest.approx(sum(ce) / 4, rel=1e-6)
