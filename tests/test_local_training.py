"""Local training: batch plan, per-client seeding, vectorised == per-client training, parallel clients ==\neach client alone."""
import pytest
import torch
from torch import nn

from fedml_heterofl.models import RNN, Dropout, ParamLayout, build_model
from fedml_heterofl.simulation.local_training import (
    batch_plan,
    client_seed,
    local_sgd,
    local_sgd_parallel,
    local_sgd_vectorised,
)


def test_batch_plan_visits_every_sample_once_per_epoch():
    plan = batch_plan(10, 2, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in plan] == [4, 4, 2, 4, 4, 2]
    for epoch in (plan[:3], plan[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))


def test_client_seed_depends_on_all_three_parts():
    seeds = {client_seed(s, r, c) for s in range(3) for r in range(3) for c in range(3)}
    assert len(seeds) == 27
    assert client_seed(1, 2, 3) == client_seed(1, 2, 3)


def problem(seed=0, sizes=(37, 5, 64, 20)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), 12, generator=g)
    y = torch.randint(0, 4, (sum(sizes),), generator=g)
    idx = list(torch.randperm(sum(sizes), generator=g).split(list(sizes)))
    model = nn.Linear(12, 4)
    layout = ParamLayout(model)
    return model, layout, layout.flatten(model), x, y, idx


@pytest.mark.parametrize("momentum, weight_decay, epochs, sizes", [
    (0.0, 0.0, 1, (37, 5, 64, 20)), (0.9, 1e-3, 3, (37, 5, 64, 20)),
    (0.9, 0.0, 2, (16, 0, 3, 8, 41)),  # an empty client, exact multiples of the batch size
])
def test_vectorised_equals_per_client_sgd(momentum, weight_decay, epochs, sizes):
    # clients of unequal size: the small ones run out of batches and must stop updating
    model, layout, w, x, y, idx = problem(sizes=sizes)
    seeds = [client_seed(7, 1, i) for i in range(len(idx))]
    kw = dict(epochs=epochs, batch_size=8, lr=0.2, momentum=momentum, weight_decay=weight_decay)
    ref = torch.stack([local_sgd(model, layout, w, x[ix], y[ix], seed=s, **kw) for ix, s in zip(idx, seeds)])
    vec = local_sgd_vectorised(model, layout, w, x, y, idx, seeds=seeds, **kw)
    assert torch.allclose(vec, ref, atol=1e-6)
    assert ref.abs().max() > 1e-2  # the clients really trained


def test_vectorised_rnn_equals_per_client_training_through_nn_lstm():
    # the vmappable LSTM under vmap(grad) (the torch-op recurrence) vs one client at a time through
    # PyTorch's fused nn.LSTM kernel, on clients of unequal size with momentum and two epochs
    torch.manual_seed(0)
    model = RNN(vocab_size=12, num_classes=12, hidden_size=16)
    layout = ParamLayout(model)
    w = layout.flatten(model)
    sizes = (13, 4, 20, 0, 9)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 12, (sum(sizes), 7), generator=g)
    y = torch.randint(0, 12, (sum(sizes),), generator=g)
    idx = list(torch.randperm(sum(sizes), generator=g).split(list(sizes)))
    seeds = [client_seed(1, 2, i) for i in range(len(idx))]
    kw = dict(epochs=2, batch_size=4, lr=0.5, momentum=0.9)
    ref = torch.stack([local_sgd(model, layout, w, x[ix], y[ix], seed=s, **kw) for ix, s in zip(idx, seeds)])
    vec = local_sgd_vectorised(model, layout, w, x, y, idx, seeds=seeds, **kw)
    assert torch.allclose(vec, ref, atol=1e-5)
    assert ref.abs().max() > 0.1 and ref[3].abs().max() == 0  # trained; the empty client did not move


def test_plain_sgd_by_hand_one_step():
    # one sample, one step of SGD on a 1-input, 2-class linear model with zero weights:
    # logits (0, 0) -> p = (.5, .5), label 1 -> dL/dlogit = (.5, -.5); dW = dlogit * x, db = dlogit
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    layout = ParamLayout(model)
    w = layout.flatten(model)
    upd = local_sgd(model, layout, w, torch.tensor([[2.0]]), torch.tensor([1]), epochs=1, batch_size=4, lr=0.1,
                    seed=0)
    # update = -lr * grad: weight (-0.1 * 0.5 * 2, +0.1 * 0.5 * 2), bias (-0.05, +0.05)
    assert torch.allclose(upd, torch.tensor([-0.1, 0.1, -0.05, 0.05]))


def test_same_seed_same_update_and_global_rng_untouched():
    model, layout, w, x, y, idx = problem()
    # our Dropout draws from the client's generator; torch's nn.Dropout from the (seeded, restored) global RNG
    for drop in (Dropout(0.5), nn.Dropout(0.5)):
        net = nn.Sequential(nn.Linear(12, 16), drop, nn.Linear(16, 4))
        lay = ParamLayout(net)
        w0 = lay.flatten(net)
        state = torch.random.get_rng_state()
        a = local_sgd(net, lay, w0, x, y, epochs=1, batch_size=8, lr=0.1, seed=3)
        assert torch.equal(torch.random.get_rng_state(), state)
        b = local_sgd(net, lay, w0, x, y, epochs=1, batch_size=8, lr=0.1, seed=3)
        c = local_sgd(net, lay, w0, x, y, epochs=1, batch_size=8, lr=0.1, seed=4)
        assert torch.equal(a, b) and not torch.equal(a, c)


def cnn_problem(sizes=(20, 7, 33, 12, 0, 16)):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(sum(sizes), 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (sum(sizes),), generator=g)
    idx = list(torch.randperm(sum(sizes), generator=g).split(list(sizes)))
    torch.manual_seed(0)
    model = build_model("cnn", 10)
    layout = ParamLayout(model)
    return model, layout, layout.flatten(model), x, y, idx


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parallel_clients_train_as_each_alone_whoever_runs_next_to_them(workers):
    # the CNN (dropout: masks from each client's own generator): a client's update is the same bit for bit
    # whether it trains alone or next to others, in any order, on any number of worker threads
    model, layout, w, x, y, idx = cnn_problem()
    seeds = [client_seed(0, 4, i) for i in range(len(idx))]
    kw = dict(epochs=2, batch_size=8, lr=0.05, momentum=0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parallel workers compute with one intra-op thread each
    try:
        alone = [local_sgd(model, layout, w, x[ix], y[ix], seed=s, **kw) for ix, s in zip(idx, seeds)]
    finally:
        torch.set_num_threads(threads)
    state = torch.random.get_rng_state()
    both = local_sgd_parallel(model, layout, w, x, y, idx, seeds=seeds, workers=workers, **kw)
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), state)
    for i, a in enumerate(alone):
        assert torch.equal(both[i], a), i
    order = [3, 0, 5, 2]  # a subset, shuffled: other neighbours, other workers
    part = local_sgd_parallel(model, layout, w, x, y, [idx[i] for i in order], seeds=[seeds[i] for i in order],
                              workers=workers, **kw)
    assert all(torch.equal(part[j], alone[i]) for j, i in enumerate(order))
    assert alone[0].abs().max() > 1e-3 and not torch.equal(alone[0], alone[2]) and alone[4].abs().max() == 0


@pytest.mark.parametrize("layer, message", [(nn.Dropout(0.5), "draw from torch's global RNG"),
                                            (nn.BatchNorm1d(4), "has buffers")])
def test_parallel_clients_reject_global_rng_dropout_and_buffers(layer, message):
    net = nn.Sequential(nn.Linear(12, 4), layer)
    _, _, _, x, y, idx = problem()
    lay = ParamLayout(net)
    with pytest.raises(ValueError, match=message):
        local_sgd_parallel(net, lay, lay.flatten(net), x, y, idx, seeds=[0] * len(idx), workers=2, epochs=1,
                           batch_size=8, lr=0.1)
