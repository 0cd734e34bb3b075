"""Models: output shapes, parameter counts against FedML 0.9.6's own classes, flat round trip,
batched functional forward against per-model forward."""
import pytest
import torch
from fedml.model.cv.cnn import CNN_DropOut
from fedml.model.cv.resnet import resnet20
from fedml.model.linear.lr import LogisticRegression as FedMLLR
from fedml.model.nlp.rnn import RNN_OriginalFedAvg

from fedml_heterofl.models import ParamLayout, batched_loss, build_model


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
