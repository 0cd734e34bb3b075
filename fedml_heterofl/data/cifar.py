"""CIFAR-10 (32x32 colour images, 10 classes) from torchvision's python pickles in
``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``), installed by torchvision's download
(needs internet), read without running any code a planted pickle holds (:func:`read_cifar_batch`).
Images load as float32 in [0, 1] of shape (N, 3, 32, 32).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from fedml_heterofl.data.dataset import DataError, Dataset, DatasetSpec, check_labels, fetch_command, torchvision_fetch

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def fetch_cifar10(root: Path, root_arg: Optional[str] = None) -> None:
    """torchvision's download into ``root/cifar-10-batches-py`` (needs internet)."""
    import torchvision

    manual = ("download cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, "
              f"md5 c58f30108f718f92721af3b95e74349a) on a machine with internet access and extract it into {root} "
              f"so that {root / CIFAR_FOLDER}/data_batch_1..5 and test_batch exist")
    torchvision_fetch("cifar10", lambda: torchvision.datasets.CIFAR10(str(root), download=True), manual)


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
    folder = root / CIFAR_FOLDER
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


CIFAR10 = DatasetSpec("cifar10", CIFAR_FOLDER, 10, ("resnet20",), fetch_cifar10, load_cifar10)
