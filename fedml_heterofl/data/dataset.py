"""What a dataset is to the package: its tensors (:class:`Dataset`), its description
(:class:`DatasetSpec`, one per dataset, collected in :data:`fedml_heterofl.data.catalog.DATASETS`), and
the file checks every dataset family shares. A missing or corrupt file raises :class:`DataError`
naming the ``fedml-heterofl data fetch`` command that installs it."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
from torch import Tensor

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


#: ``fetch(root, root_arg)``: install the dataset under the data root ``root`` and verify it;
#: ``root_arg`` is the ``--root`` the user gave (``None``: the default root), for the messages
Fetch = Callable[[Path, Optional[str]], None]
#: ``load(root, root_arg, **options) -> Dataset`` from the installed files, never touching the network
Load = Callable[..., Dataset]
#: ``survey(root, root_arg) -> (#train, #test, #classes, detail)`` without building the whole dataset
Survey = Callable[[Path, Optional[str]], Tuple[int, int, int, str]]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the package knows of one dataset. Adding a dataset: a module with its loader and
    its spec, the spec in :data:`fedml_heterofl.data.catalog.DATASETS`, and a configuration.

    Attributes:
        name: what ``data_args.dataset`` and ``fedml-heterofl data fetch`` call it.
        folder: the folder under the data root that holds its files (torchvision's layout, so files
            placed by hand or by torchvision are found too).
        num_classes: L, its number of real classes (HeteroFL's watermark class comes on top).
        models: the architectures (:data:`fedml_heterofl.models.MODELS` names) that take its inputs.
        fetch: installs and verifies it (:data:`Fetch`).
        load: loads it as tensors (:data:`Load`).
        load_options: the keyword options ``load`` takes.
        pinned_sha256: file name under ``folder`` -> SHA-256, checked by every run
            (:func:`~fedml_heterofl.data.catalog.verify_installed`); empty where the files are checked
            as they are read.
        survey: its sizes for ``fedml-heterofl data info`` without loading it (:data:`Survey`);
            ``None``: it is loaded.
    """

    name: str
    folder: str
    num_classes: int
    models: Tuple[str, ...]
    fetch: Fetch
    load: Load
    load_options: Tuple[str, ...] = ()
    pinned_sha256: Mapping[str, str] = field(default_factory=dict)
    survey: Optional[Survey] = None


def data_root(root: Optional[str] = None) -> Path:
    """``root``, else ``$FEDML_HETEROFL_DATA``, else ``~/.cache/fedml_heterofl``."""
    return Path(root or os.environ.get(DATA_ENV) or Path.home() / ".cache" / "fedml_heterofl").expanduser()


def fetch_command(name: str, root: Optional[str] = None) -> str:
    """The command that installs ``name`` (with ``--root`` when not the default root)."""
    return f"fedml-heterofl data fetch {name}" + (f" --root {root}" if root else "")


def sha256(path: Path) -> str:
    """The SHA-256 of the file ``path``, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_files(name: str, folder: Path, hashes: Mapping[str, str], root: Optional[str],
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


def check_labels(name: str, path: Path, labels: np.ndarray, num_classes: int, root: Optional[str]) -> None:
    """:class:`DataError` naming ``path`` unless every label lies in ``0..num_classes - 1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{name}: {path} holds labels from {labels.min()} to {labels.max()}; allowed: 0 to "
                        f"{num_classes - 1}; reinstall it with `{fetch_command(name, root)}`")


def torchvision_fetch(name: str, make: Callable[[], object], manual: str) -> None:
    """``make()`` (a torchvision dataset with ``download=True``); :class:`DataError` saying how to place
    the files by hand (``manual``) when it fails: datasets only torchvision can download are not
    installable from the package registries this machine can reach."""
    try:
        make()
    except Exception as exc:  # torchvision raises URLError/RuntimeError/OSError without a network
        raise DataError(f"{name}: torchvision could not download it ({type(exc).__name__}: {exc}). {name} is not "
                        "installable from the package registries (PyPI, npm, Debian) this machine can reach. "
                        f"Place the files by hand: {manual}") from None
