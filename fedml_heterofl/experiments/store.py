"""Result folders: ``results/<name>/`` written atomically and resumable (DESIGN §9, §11).

A run folder holds ``config.yaml`` (the resolved settings), ``metrics.csv`` (one row per completed
round), ``summary.json`` (written when the run ends; ``finished: true``), ``checkpoint.pt`` (the state
after the last completed round) and ``run.log``. Every file except the log is replaced atomically
(write to a temporary file in the same folder, flush, ``os.replace``), so a killed run leaves either
the old or the new version of each file, never half of one. The checkpoint and the metrics are
written together after each round: on resume the run restarts after the round in the checkpoint,
so no round is lost or repeated.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import yaml

log = logging.getLogger(__name__)


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes]) -> None:
    """Replace ``path`` with ``data`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunStore:
    """One run's result folder."""

    def __init__(self, root: Union[str, os.PathLike], name: str) -> None:
        self.path = Path(root) / name
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def finished(self) -> bool:
        """Whether ``summary.json`` says the run completed."""
        summary = self.read_summary()
        return bool(summary and summary.get("finished"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(self.path / "config.yaml", yaml.safe_dump(_jsonable(dict(config)), sort_keys=False))

    def config_matches(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config.yaml`` holds ``config`` (as :meth:`write_config` would write it)."""
        path = self.path / "config.yaml"
        if not path.exists():
            return False
        return yaml.safe_load(path.read_text()) == yaml.safe_load(yaml.safe_dump(_jsonable(dict(config)),
                                                                                sort_keys=False))

    def save_round(self, state: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> None:
        """Write the checkpoint, then the metrics of every completed round."""
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        atomic_write(self.path / "checkpoint.pt", buf.getvalue())
        self.write_metrics(metrics)

    def load_checkpoint(self) -> Optional[Dict[str, Any]]:
        """The last checkpoint (``weights_only=True``: tensors and plain containers only), or None."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        return torch.load(path, weights_only=True)

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        keys: List[str] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / "metrics.csv", out.getvalue())

    def read_metrics(self) -> List[Dict[str, str]]:
        path = self.path / "metrics.csv"
        if not path.exists():
            return []
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write(self.path / "summary.json", json.dumps(_jsonable(dict(summary)), indent=1))

    def read_summary(self) -> Optional[Dict[str, Any]]:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log_handler(self) -> logging.Handler:
        """A handler appending to ``run.log`` (attach it to the package logger for the run)."""
        handler = logging.FileHandler(self.path / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler
