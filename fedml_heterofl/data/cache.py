"""A dataset as memory-mapped ``.npy`` arrays, so that many processes of one run read only the rows
they need (the MPI backend's small ranks).

:func:`load_dataset` builds the whole training set as float32 tensors in every process that calls it
(MNIST: 188 MB, plus the decoding's temporaries). :class:`DatasetCache` writes a loaded
:class:`~fedml_heterofl.data.dataset.Dataset` once, as plain ``.npy`` files under the data root, and
opens it again without reading it:

* :meth:`DatasetCache.dataset` — the same :class:`Dataset` with every tensor backed by a
  copy-on-write memory map (pages are read from the page cache, shared by every process of the
  machine, only when touched; writing to a tensor copies the page privately and never changes the
  file). Good for reading a whole array (the server's test set) or its shape and labels; scattered
  rows are not: a page fault maps the page cache's whole folio around the row (measured here: 132
  random MNIST rows through the map added 145 MB of resident file pages, with ``MADV_RANDOM``
  advised).
* :meth:`DatasetCache.rows` — copies of some training rows, read with ``pread`` (no map at all), so a
  process that trains different clients in every round holds only the current ones.

Location: ``<data root>/.mmap/<dataset>-<key>/`` where ``key`` hashes the dataset name, its load
options and the size and modification time of every file of the installed dataset (re-installing a
dataset makes a new cache). A cache is written to a temporary folder and renamed into place, so
concurrent builders (one per machine of an MPI job on a shared file system) and killed builders
never leave a half-written cache behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.data.catalog import DATASETS, load_dataset
from fedml_heterofl.data.dataset import Dataset, data_root

log = logging.getLogger(__name__)

#: bump when the file layout changes (old caches are then ignored)
CACHE_VERSION = 1
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_GROUPS = ("train_groups", "test_groups")


def _fingerprint(name: str, root: Optional[str], options: Dict[str, Any]) -> str:
    base = data_root(root) / DATASETS[name].folder
    files = sorted((str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
    blob = json.dumps({"version": CACHE_VERSION, "name": name, "options": options, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _header(fh: Any) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of the ``.npy`` file open in ``fh`` (as :func:`numpy.save` writes it)."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran:
        raise ValueError(f"{getattr(fh, 'name', fh)}: Fortran-ordered arrays are not cached")
    return shape, dtype, fh.tell()


def _open(path: Path) -> Tensor:
    """A tensor over a copy-on-write memory map of the ``.npy`` file ``path``."""
    with open(path, "rb") as fh:
        shape, dtype, offset = _header(fh)
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    count = int(np.prod(shape))
    return torch.from_numpy(np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape))


def _read_rows(path: Path, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of the ``.npy`` file ``path``, read with one ``pread`` per row in file order."""
    with open(path, "rb", buffering=0) as fh:
        shape, dtype, offset = _header(fh)
        if len(index) and (index.min() < 0 or index.max() >= shape[0]):
            raise IndexError(f"{path.name}: rows must lie in [0, {shape[0]}), got {index.min()}..{index.max()}")
        out = np.empty((len(index),) + tuple(shape[1:]), dtype)
        flat = out.reshape(len(index), int(np.prod(shape[1:], dtype=np.int64))).view(np.uint8)
        size = flat.shape[1]
        for i in np.argsort(index, kind="stable"):
            if os.preadv(fh.fileno(), [flat[i]], offset + int(index[i]) * size) != size:
                raise OSError(f"{path}: short read at row {int(index[i])}; rebuild the cache (delete {path.parent})")
    return out


class DatasetCache:
    """The memory-mapped copy of one dataset (module doc).

    Args:
        name: a dataset name of :func:`~fedml_heterofl.data.catalog.load_dataset`.
        root: the data root (default as :func:`~fedml_heterofl.data.dataset.data_root`).
        options: the dataset's load options (part of the cache's key).
    """

    def __init__(self, name: str, root: Optional[str] = None, **options: Any) -> None:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
        self.name, self.root, self.options = name, root, dict(options)
        self.path = data_root(root) / ".mmap" / f"{name}-{_fingerprint(name, root, self.options)}"

    @property
    def ready(self) -> bool:
        """Whether the cache is complete on disk."""
        return (self.path / "meta.json").is_file()

    def build(self) -> "DatasetCache":
        """Load the dataset (:func:`load_dataset`) and write the cache, unless it is already there."""
        if self.ready:
            return self
        data = load_dataset(self.name, self.root, **self.options)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            meta: Dict[str, Any] = {"name": data.name, "num_classes": data.num_classes, "kind": data.kind,
                                    "value_range": list(data.value_range), "groups": []}
            for key in _ARRAYS:
                np.save(tmp / f"{key}.npy", getattr(data, key).numpy())
            for key in _GROUPS:
                groups = getattr(data, key)
                if groups is not None:
                    meta["groups"].append(key)
                    np.save(tmp / f"{key}.npy", torch.cat(groups).numpy() if groups else np.zeros(0, np.int64))
                    np.save(tmp / f"{key}_sizes.npy", np.array([len(g) for g in groups], dtype=np.int64))
            (tmp / "meta.json").write_text(json.dumps(meta))  # last: marks the folder complete
            try:
                os.rename(tmp, self.path)
            except OSError:  # another process finished first: its cache is the same
                if not self.ready:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s: memory-mapped cache written to %s", self.name, self.path)
        return self

    def _meta(self) -> Dict[str, Any]:
        if not self.ready:
            raise FileNotFoundError(f"{self.path}: no cache of {self.name}; DatasetCache.build() writes it")
        return json.loads((self.path / "meta.json").read_text())

    def dataset(self) -> Dataset:
        """The dataset with memory-mapped tensors (nothing is read until a row is used)."""
        meta = self._meta()
        tensors = {key: _open(self.path / f"{key}.npy") for key in _ARRAYS}
        groups: Dict[str, Optional[List[Tensor]]] = {key: None for key in _GROUPS}
        for key in meta["groups"]:
            flat = torch.from_numpy(np.load(self.path / f"{key}.npy"))
            groups[key] = list(flat.split(np.load(self.path / f"{key}_sizes.npy").tolist()))
        return Dataset(meta["name"], num_classes=meta["num_classes"], kind=meta["kind"],
                       value_range=tuple(meta["value_range"]), **tensors, **groups)

    def rows(self, index: Tensor) -> Tuple[Tensor, Tensor]:
        """Copies of training rows ``index``: ``(train_x[index], train_y[index])`` (module doc)."""
        ix = index.to(torch.int64).numpy()
        return (torch.from_numpy(_read_rows(self.path / "train_x.npy", ix)),
                torch.from_numpy(_read_rows(self.path / "train_y.npy", ix)))
