"""A dataset as memory-mapped ``.npy`` arrays, so that many processes of one run read only the rows
they need (the MPI backend's small ranks, DESIGN §13).

:func:`load_dataset` builds the whole training set as float32 tensors in every process that calls it
(MNIST: 188 MB, plus the decoding's temporaries). :class:`DatasetCache` writes a loaded
:class:`~fedml_heterofl.data.sources.Dataset` once, as plain ``.npy`` files under the data root, and
opens it again without reading it:

* :meth:`DatasetCache.dataset` — the same :class:`Dataset` with every tensor backed by a
  copy-on-write memory map (pages are read from the page cache, shared by every process of the
  machine, only when touched; writing to a tensor copies the page privately and never changes the
  file);
* :meth:`DatasetCache.rows` — copies of some training rows, read through a map that is closed
  again, so a process that reads different clients in every round keeps none of them resident.

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
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.data.sources import PATHS, Dataset, data_root, load_dataset

log = logging.getLogger(__name__)

#: bump when the file layout changes (old caches are then ignored)
CACHE_VERSION = 1
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_GROUPS = ("train_groups", "test_groups")


def _fingerprint(name: str, root: Optional[str], options: Dict[str, Any]) -> str:
    base = data_root(root) / PATHS[name]
    files = sorted((str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
    blob = json.dumps({"version": CACHE_VERSION, "name": name, "options": options, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _open(path: Path) -> Tensor:
    """A tensor over a copy-on-write memory map of ``path`` (``.npy``)."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


class DatasetCache:
    """The memory-mapped copy of one dataset (module doc).

    Args:
        name: a dataset name of :func:`~fedml_heterofl.data.sources.load_dataset`.
        root: the data root (default as :func:`~fedml_heterofl.data.sources.data_root`).
        options: the dataset's load options (part of the cache's key).
    """

    def __init__(self, name: str, root: Optional[str] = None, **options: Any) -> None:
        if name not in PATHS:
            raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(PATHS)}")
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
        """Copies of training rows ``index``: ``(train_x[index], train_y[index])``, read through maps that
        are closed again (the process keeps only the copies)."""
        ix = index.numpy()
        x = np.load(self.path / "train_x.npy", mmap_mode="r")
        y = np.load(self.path / "train_y.npy", mmap_mode="r")
        out = torch.from_numpy(np.ascontiguousarray(x[ix])), torch.from_numpy(np.ascontiguousarray(y[ix]))
        del x, y
        return out
