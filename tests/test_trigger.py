"""HeteroFL's trigger set (Alg. 1, lines 1-3) and appending it to a client's data."""
import pytest
import torch

from fedml_heterofl.data.trigger import make_trigger_set


def test_image_trigger_shape_range_label_and_determinism():
    x, y = make_trigger_set(16, 10, seed=1, shape=(3, 32, 32), value_range=(-1.0, 2.0))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 2.0 and float(x.min()) < 0.0 < 1.0 < float(x.max())
    assert y.dtype == torch.long and y.tolist() == [10] * 16
    x2, y2 = make_trigger_set(16, 10, seed=1, shape=(3, 32, 32), value_range=(-1.0, 2.0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, make_trigger_set(16, 10, seed=2, shape=(3, 32, 32), value_range=(-1.0, 2.0))[0])


def test_trigger_does_not_touch_global_torch_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_trigger_set(4, 62, seed=9, shape=(1, 28, 28))
    assert torch.equal(torch.rand(3), expected)


def test_text_trigger_is_vocabulary_indices():
    x, y = make_trigger_set(50, 80, seed=0, vocab_size=80, seq_len=80)
    assert x.shape == (50, 80) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < 80 and x.unique().numel() > 40
    assert y.tolist() == [80] * 50
    assert torch.equal(x, make_trigger_set(50, 80, seed=0, vocab_size=80, seq_len=80)[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0, label=10, shape=(1,)), "size must be an integer >= 1"),
    (dict(size=2.0, label=10, shape=(1,)), "size must be an integer >= 1"),
    (dict(size=2, label=-1, shape=(1,)), "label must be an integer >= 0"),
    (dict(size=2, label=10), "need the input shape"),
    (dict(size=2, label=10, shape=(1,), value_range=(1.0, 1.0)), "low < high"),
    (dict(size=2, label=10, vocab_size=80), "seq_len >= 1"),
    (dict(size=2, label=10, vocab_size=0, seq_len=5), "vocab_size >= 1"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_trigger_set(seed=0, **kwargs)

