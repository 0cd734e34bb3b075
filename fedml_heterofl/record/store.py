"""Result folders: ``results/<name>/``, written atomically while the run runs, so that a killed run resumes.

A run folder holds ``config.yaml`` (the resolved settings), ``metrics.csv`` (one row per completed
round), ``summary.json`` (written when the run ends; ``finished: true``), ``checkpoint.pt`` (the state
after the last completed round), ``checkpoint.prev.pt`` (the one before it) and ``run.log``. Every
file except the log is replaced atomically (write to a temporary file in the same folder, flush,
``os.replace``), so a killed run leaves either the old or the new version of each file, never half of
one. The checkpoint and the metrics are written together after each round: on resume the run
restarts after the round in the checkpoint, so no round is lost or repeated.

The folder is made by the first write, so a run that fails at start-up leaves nothing behind;
:meth:`RunStore.check_writable` tells before any work whether it can be made. A checkpoint carries
the run's identity (:attr:`~fedml_heterofl.settings.Settings.identity`) and a digest of its own
contents; one that cannot be read or whose digest does not match is damaged: the previous checkpoint
is used when it is intact, otherwise :class:`StoreError` names the file and offers ``--fresh``.
Problems with the folder itself (a file in its place, no write permission, a read-only or full
disk) are :class:`StoreError` naming the path, never a traceback of the OS error.

Only what a run made is overwritten or deleted. A folder made by a run holds the marker file
:data:`MARKER`; an existing folder without it is a run folder only when it holds nothing but the
files a run writes (:data:`RUN_FILES`), a checkpoint or a summary among them (folders written before
the marker). Any other existing folder is refused (:meth:`RunStore.check_writable`), and ``--fresh``
(:meth:`RunStore.clear`) deletes only the files a run writes, never a file of the user's beside them.
One process writes a run folder at a time: :meth:`RunStore.lock` holds an ``flock`` on :data:`LOCK`
in it for the run (the kernel releases it when the process ends, so a killed run never blocks its
resume); a second run into the folder fails at once naming the first one's pid.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch

from fedml_heterofl.fingerprint import fingerprint
from fedml_heterofl.yaml_input import YamlInputError, dump_yaml, parse_yaml, read_yaml

log = logging.getLogger(__name__)

#: the file that marks a folder as made by a run (module doc)
MARKER = ".fedml_heterofl-run"
#: the lock file of the run writing a folder (holds its pid)
LOCK = ".lock"
#: the files a run writes into its folder (besides :data:`MARKER`, :data:`LOCK` and ``.NAME.tmpPID``)
RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "checkpoint.pt", "checkpoint.prev.pt", "run.log",
             "partition.json")
#: FedML's home folder in an MPI run's folder (:func:`~fedml_heterofl.fedml_bridge.offline.fedml_home`)
FEDML_HOME = ".fedml"


class StoreError(RuntimeError):
    """A result folder cannot be made or written, or holds a damaged file; the message names the path."""


def _ours(name: str) -> bool:
    """Whether a run writes a file called ``name`` (:data:`RUN_FILES`, the marker, the lock, temporaries)."""
    return name in RUN_FILES or name in (MARKER, LOCK, FEDML_HOME) or (
        name.startswith(".") and any(name.startswith(f".{f}.tmp") for f in RUN_FILES))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def atomic_write(path: Union[str, os.PathLike], data: Union[str, bytes], *,
                 previous: Optional[Union[str, os.PathLike]] = None) -> None:
    """Replace ``path`` with ``data`` atomically; with ``previous``, the file ``path`` held is kept
    there (renamed just before the new one takes its place). Raises :class:`StoreError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is unwritable; the StoreError below says so
        raise StoreError(f"cannot write {path}: {_reason(exc)}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _damage(exc: BaseException) -> str:
    """Why ``torch.load`` could not read a file (never torch's advice to load it unsafely)."""
    if isinstance(exc, EOFError):
        return "it ends early (empty or truncated)"
    if isinstance(exc, RuntimeError) and "zip archive" in str(exc):
        return "it is truncated or not a checkpoint file"
    if isinstance(exc, OSError):
        return f"it cannot be read: {_reason(exc)}"
    return f"it holds data other than tensors and plain values, or is corrupt ({type(exc).__name__})"


class RunStore:
    """One run's result folder, ``root/name`` (made by the first write)."""

    def __init__(self, root: Union[str, os.PathLike], name: str) -> None:
        self.path = Path(root) / name
        self.checkpoint = self.path / "checkpoint.pt"
        self.previous = self.path / "checkpoint.prev.pt"

    @property
    def finished(self) -> bool:
        """Whether ``summary.json`` says the run completed."""
        try:
            summary = self.read_summary()
        except (OSError, ValueError):  # an unreadable summary: not finished (the run rewrites it)
            return False
        return isinstance(summary, dict) and bool(summary.get("finished"))

    def check_writable(self) -> None:
        """:class:`StoreError` unless the run folder exists as a writable folder or can be made:
        probed with a temporary file in the run folder or its nearest existing parent (nothing is
        left behind)."""
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise StoreError(f"cannot make the run folder {self.path}: {probe} is a file, not a folder "
                             "(common_args.results_dir or --results-dir)")
        self.check_ours()
        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as exc:
            raise StoreError(f"cannot write into {probe} (for the run folder {self.path}): {_reason(exc)}; "
                             "choose a writable common_args.results_dir or --results-dir") from None

    def check_ours(self) -> None:
        """:class:`StoreError` naming the folder when ``self.path`` exists but is not a run folder (module
        doc): nothing of it is read, written or deleted."""
        if not self.path.is_dir() or (self.path / MARKER).is_file():
            return
        try:
            names = sorted(p.name for p in self.path.iterdir())
        except OSError as exc:
            raise StoreError(f"cannot read the run folder {self.path}: {_reason(exc)}") from None
        foreign = [name for name in names if not _ours(name)]
        if foreign or (names and not set(names) & {"checkpoint.pt", "checkpoint.prev.pt", "summary.json",
                                                     "partition.json"}):
            shown = foreign or names
            raise StoreError(f"{self.path} exists and is not a run folder (no {MARKER}; it holds "
                             f"{', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}): nothing in it is changed "
                             "or deleted; choose another common_args.run_name or results_dir, or move the folder away")

    def clear(self, keep: Sequence[str] = (MARKER, LOCK)) -> None:
        """Delete the files a run writes from the run folder (``--fresh``), except ``keep``; any other
        file (and FedML's home folder) stays."""
        if not self.path.is_dir():
            return
        self.check_ours()
        try:
            for entry in self.path.iterdir():
                if _ours(entry.name) and entry.name not in keep and not entry.is_dir():
                    entry.unlink()
        except OSError as exc:
            raise StoreError(f"cannot remove the files of {self.path} for --fresh: {_reason(exc)}") from None

    def _make(self) -> None:
        """Make the run folder with its :data:`MARKER` (a folder from before the marker gets it)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            marker = self.path / MARKER
            if not marker.exists():
                marker.write_text("a run folder of fedml_heterofl: --fresh deletes the files a run writes here\n")
        except OSError as exc:
            raise StoreError(f"cannot make the run folder {self.path}: {_reason(exc)}") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process (module doc); :class:`StoreError` naming the holder's
        pid when another process holds it. Makes the folder."""
        self._make()
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path / LOCK}: {_reason(exc)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise StoreError(f"{self.path} is being written by another run (pid {holder}); wait for it to "
                                 "end, or give this run another common_args.run_name") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def write_file(self, name: str, data: Union[str, bytes], *, previous: Optional[Path] = None) -> None:
        """Write the file ``name`` of the run folder atomically (:func:`atomic_write`), making the folder."""
        self._make()
        atomic_write(self.path / name, data, previous=previous)

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.write_file("config.yaml", dump_yaml(_jsonable(dict(config))))

    def config_matches(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config.yaml`` holds ``config`` (as :meth:`write_config` would write it); the
        identity check of checkpoints written before they carried an identity."""
        plain = _jsonable(dict(config))  # as write_config writes it
        expected = parse_yaml(dump_yaml(plain))
        try:
            return read_yaml(self.path / "config.yaml") == expected
        except YamlInputError:
            return False

    def checkpoint_of(self, identity: str, config: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The last intact checkpoint (:meth:`load_checkpoint`), or None; :class:`StoreError` when it belongs
        to a run of another ``identity`` (checkpoints from before identities: whether ``config.yaml`` holds
        ``config`` decides)."""
        ckpt = self.load_checkpoint()
        if ckpt is None:
            return None
        if not (ckpt["identity"] == identity if "identity" in ckpt else self.config_matches(config)):
            raise StoreError(f"{self.path} holds a run with other settings (a checkpoint of another "
                             "identity); set common_args.run_name to a new name, or pass --fresh to start over")
        return ckpt

    def save_round(self, state: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> None:
        """Write the checkpoint (with its digest; the one it replaces becomes the previous
        checkpoint), then the metrics of every completed round."""
        state = dict(state)
        state["digest"] = fingerprint({k: v for k, v in state.items() if k != "digest"})
        buf = io.BytesIO()
        torch.save(state, buf)
        self.write_file(self.checkpoint.name, buf.getvalue(), previous=self.previous)
        self.write_metrics(metrics)

    def read_checkpoint(self, path: Path) -> Dict[str, Any]:
        """The checkpoint in ``path`` (``weights_only=True``: tensors and plain containers only),
        checked: a mapping with ``round``, ``params`` and one metrics row per round, whose digest
        matches. Raises :class:`StoreError` saying what is wrong."""
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # a damaged file can make torch.load raise almost anything
            raise StoreError(f"{path} is damaged: {_damage(exc)}") from None
        problem = None
        if not isinstance(state, dict) or not {"round", "params", "metrics"} <= set(state):
            problem = "it is not a checkpoint of this package (round, params, metrics)"
        elif not (isinstance(state["round"], int) and isinstance(state["params"], torch.Tensor)
                  and state["params"].dim() == 1 and isinstance(state["metrics"], list)
                  and len(state["metrics"]) == state["round"] + 1):
            problem = "its round, parameters and metrics do not fit together"
        elif "digest" in state and state["digest"] != fingerprint({k: v for k, v in state.items() if k != "digest"}):
            problem = "its contents do not match their digest"
        if problem:
            raise StoreError(f"{path} is damaged: {problem}")
        return state

    def load_checkpoint(self) -> Optional[Dict[str, Any]]:
        """The last intact checkpoint, or None when the run has none.

        A damaged ``checkpoint.pt`` is reported (a warning naming it) and the previous checkpoint is
        used when it is intact; when neither is, :class:`StoreError` names the files and offers
        ``--fresh``."""
        if not self.checkpoint.exists() and not self.previous.exists():
            return None
        try:
            return self.read_checkpoint(self.checkpoint)
        except StoreError as exc:
            damage = str(exc) if self.checkpoint.exists() else f"{self.checkpoint} is missing"
        if self.previous.exists():
            try:
                state = self.read_checkpoint(self.previous)
            except StoreError as exc:
                damage += f"; the previous checkpoint {exc}"
            else:
                log.warning("%s; resuming from the previous checkpoint %s (after round %d)", damage,
                            self.previous, state["round"])
                return state
        raise StoreError(f"{damage}; start the run over with --fresh (or move {self.path} away to keep it)")

    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        keys: List[str] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
        self.write_file("metrics.csv", out.getvalue())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        self.write_file("summary.json", json.dumps(_jsonable(dict(summary)), indent=1))

    def read_summary(self) -> Optional[Dict[str, Any]]:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log_handler(self) -> logging.Handler:
        """A handler appending to ``run.log`` (attach it to the package logger for the run); makes
        the folder."""
        self._make()
        try:
            handler = logging.FileHandler(self.path / "run.log")
        except OSError as exc:
            raise StoreError(f"cannot write {self.path / 'run.log'}: {_reason(exc)}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler
