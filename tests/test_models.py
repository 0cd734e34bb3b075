"""Models: output shapes, parameter counts against FedML 0.9.6's own classes, flat round trip,
batched functional forward against per-model forward; the vmappable LSTM against nn.LSTM and FedML's
RNN; our CNN against FedML's CNN_DropOut; the dropout masks."""
import pytest
import torch
from fedml.model.cv.cnn import CNN_DropOut
from fedml.model.cv.resnet import resnet20
from fedml.model.linear.lr import LogisticRegression as FedMLLR
from fedml.model.nlp.rnn import RNN_OriginalFedAvg

from torch.func import functional_call, grad, vmap

from fedml_heterofl.models import LSTM, Dropout, ParamLayout, batched_loss, build_model, dropout_mask
from fedml_heterofl.models.lstm import _LSTMRecurrence


def count(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


INPUTS = {"lr": lambda n: torch.rand(n, 1, 28, 28), "cnn": lambda n: torch.rand(n, 1, 28, 28),
          "resnet20": lambda n: torch.rand(n, 3, 32, 32), "rnn": lambda n: torch.randint(0, 80, (n, 80))}
CLASSES = {"lr": 10, "cnn": 62, "resnet20": 10, "rnn": 80}


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("watermark", [False, True])
def test_output_shapes(name, watermark):
    m = build_model(name, CLASSES[name], watermark=watermark).eval()
    assert m(INPUTS[name](3)).shape == (3, CLASSES[name] + watermark)


@pytest.mark.parametrize("name, fedml_model, head_in", [
    ("lr", lambda: FedMLLR(784, 10), 784),
    ("cnn", lambda: CNN_DropOut(only_digits=False), 128),
    ("resnet20", lambda: resnet20(10), 64),
    ("rnn", lambda: RNN_OriginalFedAvg(embedding_dim=8, vocab_size=80, hidden_size=256), 256),
])
def test_parameter_counts_equal_fedml_plus_the_watermark_output(name, fedml_model, head_in):
    ours = build_model(name, CLASSES[name])
    assert count(ours) == count(fedml_model())
    # the watermark output adds one row of the last dense layer: head_in weights + 1 bias
    assert count(build_model(name, CLASSES[name], watermark=True)) == count(ours) + head_in + 1
    if name == "resnet20":
        assert count(ours) == 272_474


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_flat_round_trip_is_exact(name):
    m = build_model(name, CLASSES[name], watermark=True)
    layout = ParamLayout(m)
    flat = layout.flatten(m)
    assert flat.shape == (layout.d,)
    other = build_model(name, CLASSES[name], watermark=True)
    layout.load(other, flat)
    assert torch.equal(layout.flatten(other), flat)
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), other.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("name", ["lr", "cnn", "resnet20", "rnn"])
def test_batched_loss_equals_per_model_loss(name):
    torch.manual_seed(0)
    m = build_model(name, CLASSES[name], watermark=True)
    layout = ParamLayout(m)
    w = layout.flatten(m)
    params = torch.stack([w, w + 0.01 * torch.randn_like(w), w - 0.02 * torch.randn_like(w)])
    x = INPUTS[name](5)
    y = torch.randint(0, CLASSES[name] + 1, (5,))
    got = batched_loss(m, layout, params, (x, y), chunk=2)
    m.eval()
    expected = []
    for p in params:
        layout.load(m, p)
        with torch.no_grad():
            expected.append(float(torch.nn.functional.cross_entropy(m(x), y)))
    assert torch.allclose(got, torch.tensor(expected), atol=1e-5)


def test_bad_names():
    with pytest.raises(ValueError, match="unknown model 'vgg'; allowed: lr, cnn, resnet20, rnn"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("lr", 1)


# --- the vmappable LSTM (issue 12, point 3) ---------------------------------------------------------------

def _fedml_rnn_trained(steps=3, seed=0):
    """FedML's own RNN_OriginalFedAvg (a plain nn.LSTM) trained a few SGD steps: a checkpoint from the
    model our RNN replaces."""
    torch.manual_seed(seed)
    net = RNN_OriginalFedAvg(embedding_dim=8, vocab_size=80, hidden_size=256)
    net.initial = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.8)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randint(0, 80, (10, 80), generator=g), torch.randint(0, 80, (10,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def _vmapped(model, x):
    """``model(x)`` computed under vmap over one copy of its parameters (the LSTM's torch-op path)."""
    params = {n: p[None] for n, p in model.named_parameters()}
    return vmap(lambda p: functional_call(model, p, (x,)))(params)


def test_rnn_has_fedml_parameters_names_and_initialisation():
    torch.manual_seed(3)
    fedml = RNN_OriginalFedAvg(embedding_dim=8, vocab_size=80, hidden_size=256)
    torch.manual_seed(3)
    ours = build_model("rnn", 80)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in fedml.named_parameters()]
    assert list(ours.state_dict()) == list(fedml.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), fedml.state_dict().values()))
    assert isinstance(ours.lstm, torch.nn.LSTM)


def test_rnn_loads_a_trained_nn_lstm_checkpoint_and_gives_its_outputs_on_both_paths():
    fedml = _fedml_rnn_trained()
    ours = build_model("rnn", 80)
    ours.load_state_dict(fedml.state_dict())  # strict: the same keys
    x = torch.randint(0, 80, (6, 80), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = fedml(x)
        assert torch.equal(ours(x), ref)  # plain tensors: PyTorch's fused LSTM, as before
        assert torch.allclose(_vmapped(ours, x)[0], ref, atol=1e-5)  # the torch-op recurrence
    moved = max(float((v - fedml.initial[k]).abs().max()) for k, v in fedml.state_dict().items())
    assert moved > 1e-2  # a trained checkpoint, not the initial weights


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_recurrence_equals_nn_lstm_outputs_states_and_gradients(layers):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 7, num_layers=layers, batch_first=True).double()
    ours = LSTM(5, 7, num_layers=layers).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 9, 5, dtype=torch.double)
    out, (h, c) = ref(x)
    v_out, (v_h, v_c) = _vmapped(ours, x)
    for a, b in ((out, v_out[0]), (h, v_h[0]), (c, v_c[0])):
        assert torch.allclose(a, b, atol=1e-12)
    # gradients of a loss on every output, w.r.t. the input and every weight: plain autograd through
    # nn.LSTM vs torch.func.grad through the hand-written backward pass
    w_out, w_h, w_c = torch.randn_like(out), torch.randn_like(h), torch.randn_like(c)

    def loss(params, x):
        o, (hh, cc) = functional_call(ours, params, (x,))
        return (o * w_out).sum() + (hh * w_h).sum() + (cc * w_c).sum()

    params = {n: p.detach() for n, p in ours.named_parameters()}
    g_params, g_x = grad(loss, argnums=(0, 1))(params, x)
    xr = x.clone().requires_grad_()
    o, (hh, cc) = ref(xr)
    expected = torch.autograd.grad((o * w_out).sum() + (hh * w_h).sum() + (cc * w_c).sum(), [xr, *ref.parameters()])
    assert torch.allclose(g_x, expected[0], atol=1e-12)
    for (name, _), e in zip(ref.named_parameters(), expected[1:]):
        assert torch.allclose(g_params[name], e, atol=1e-12), name


def test_lstm_recurrence_passes_gradcheck():
    xi = torch.randn(2, 4, 12, dtype=torch.double, requires_grad=True)
    w_hh = (0.5 * torch.randn(12, 3, dtype=torch.double)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _LSTMRecurrence.apply(a, b)[0], (xi, w_hh))


def test_lstm_under_vmap_equals_each_model_alone():
    torch.manual_seed(1)
    m = LSTM(4, 6, num_layers=2)
    layout = ParamLayout(m)
    w = layout.flatten(m)
    flats = torch.stack([w, w + 0.3 * torch.randn_like(w), w - 0.3 * torch.randn_like(w)])
    x = torch.randn(3, 2, 8, 4)  # one batch per model
    got = vmap(lambda p, xb: functional_call(m, layout.unflatten(p), (xb,))[0])(flats, x)
    for i in range(3):
        layout.load(m, flats[i])
        with torch.no_grad():
            assert torch.allclose(got[i], m(x[i])[0], atol=1e-6)


def test_lstm_rejects_an_initial_state():
    m = LSTM(2, 3)
    with pytest.raises(ValueError, match="initial state is not supported; allowed: hx=None"):
        m(torch.zeros(1, 2, 2), (torch.zeros(1, 1, 3), torch.zeros(1, 1, 3)))


# --- the CNN: FedML's function, computed faster (issue 12, point 2) ------------------------------------------

def test_cnn_computes_fedml_cnn_dropout_outputs_and_gradients():
    torch.manual_seed(0)
    fedml = CNN_DropOut(only_digits=True).eval()
    ours = build_model("cnn", 10).eval()
    ours.load_state_dict(fedml.state_dict())  # the same keys
    assert ours.conv2d_2.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([1, 7, 3, 0])
    ref = fedml(x[:, 0])  # FedML's forward adds the channel axis itself
    out = ours(x)
    assert torch.allclose(out, ref, atol=1e-5)
    expected = torch.autograd.grad(torch.nn.functional.cross_entropy(ref, y), list(fedml.parameters()))
    got = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), list(ours.parameters()))
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-5, rtol=1e-4)
    # the flat vector and the state dict hold the values in the usual (NCHW) order
    assert torch.equal(ParamLayout(ours).flatten(ours), torch.cat([p.reshape(-1) for p in fedml.parameters()]))


@pytest.mark.parametrize("p", [0.25, 0.5, 0.1])
def test_dropout_mask_zeroes_a_fraction_p_and_scales_the_rest(p):
    n = 1_000_000
    mask = dropout_mask((1000, 1000), p, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (1000, 1000) and mask.dtype == torch.float32
    values = torch.unique(mask)
    assert len(values) == 2 and values[0] == 0 and torch.isclose(values[1], torch.tensor(1 / (1 - p)))
    zeros = float((mask == 0).float().mean())
    assert abs(zeros - p) < 5 * (p * (1 - p) / n) ** 0.5 + 2**-17  # 5 sigma, plus the 16-bit rounding of p
    assert abs(float(mask.mean()) - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_mask_is_seeded_and_handles_the_extremes():
    a = dropout_mask((7, 5), 0.3, generator=torch.Generator().manual_seed(4))
    b = dropout_mask((7, 5), 0.3, generator=torch.Generator().manual_seed(4))
    c = dropout_mask((7, 5), 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(dropout_mask((3, 3), 0.0), torch.ones(3, 3))
    assert torch.equal(dropout_mask((3, 3), 1.0), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\], got 1.5"):
        dropout_mask((2,), 1.5)


def test_dropout_module_is_identity_in_eval_mode_and_seeded_by_the_global_rng():
    d = Dropout(0.5)
    x = torch.randn(4, 6)
    assert torch.equal(d.eval()(x), x)
    d.train()
    torch.manual_seed(2)
    a = d(x)
    torch.manual_seed(2)
    assert torch.equal(d(x), a)
    assert set(torch.unique(a / x).tolist()) <= {0.0, 2.0} and (a == 0).any() and (a != 0).any()
