"""FedML 0.9.6 initialisation that never reaches the network and keeps the process as it was.

What ``fedml.init`` does by default (FedML 0.9.6 ``fedml/__init__.py``) and what :func:`init` does instead:

* ``mlops.init`` POSTs to ``open.fedml.ai`` for its configs (5 tries, no timeout): the fetch is
  replaced by a stub that returns empty configs (:func:`disable_config_fetch`, process-wide).
* ``collect_env`` probes HTTP/S3/MQTT for non-simulation runs: ``check_env=False``.
* ``MLOpsRuntimeLog.init_logs`` replaces the root logger and ``sys.stdout.write``:
  ``should_init_logs=False``; the root logger's handlers and level are restored afterwards too (FedML's
  module-level ``logging.info`` calls would otherwise install a default handler on an empty root).
* FedML writes ``~/.fedml/...`` (``.env``, device ids, log folders, ``fedml_trace/<pid>``) through
  ``os.path.expanduser("~")`` at call time; FedML has no setting for this folder. :func:`fedml_home`
  points ``HOME`` at the run directory for a scope, so the folder is ``<run_dir>/.fedml``. Use it
  around ``FedMLRunner(...).run()`` as well (:func:`fedml_heterofl.fedml_bridge.mpi.run_cross_silo` does).

Side effects that remain (FedML's own, documented): ``random``, ``np.random`` and ``torch`` are seeded
with ``args.random_seed``; ``multiprocess`` uses ``fork``; ``FEDML_ENV_VERSION`` is set in
``os.environ``.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import fedml
from fedml.core.mlops.mlops_configs import MLOpsConfigs

log = logging.getLogger(__name__)

#: the attribute :func:`init` sets on ``args`` (the run directory's FedML home), which makes it idempotent
INIT_MARK = "fedml_heterofl_home"

#: FedML's command-line defaults (``fedml.arguments.add_args``) that a namespace built without
#: FedML's argument parser lacks; ``worker_num`` defaults to ``client_num_per_round`` as FedML's loader does.
_CLI_DEFAULTS = {"run_id": "0", "rank": 0, "local_rank": 0, "node_rank": 0, "role": "client",
                 "run_device_id": "0", "using_mlops": False, "yaml_config_file": ""}


def _no_config_fetch() -> tuple:
    """Stand-in for ``MLOpsConfigs.fetch_all_configs``: empty MQTT/S3/MLOps/docker configs."""
    return {}, {}, {"LOG_SERVER_URL": ""}, {}


def disable_config_fetch() -> None:
    """Replace FedML's HTTPS config fetch by :func:`_no_config_fetch` (process-wide, idempotent)."""
    MLOpsConfigs.fetch_all_configs = staticmethod(_no_config_fetch)


@contextmanager
def fedml_home(run_dir: Union[str, os.PathLike]) -> Iterator[Path]:
    """Point ``HOME`` at ``run_dir`` (created if needed) for the block, so FedML writes ``run_dir/.fedml``.

    Yields the FedML home folder ``run_dir/.fedml``. ``HOME`` is restored afterwards.
    """
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(run_dir)
    try:
        yield run_dir / ".fedml"
    finally:
        if old is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old


def init(args: Any, run_dir: Union[str, os.PathLike]) -> Any:
    """``fedml.init(args, check_env=False, should_init_logs=False)``, offline and contained.

    Args:
        args: FedML's flat argument namespace (``fedml.arguments.Arguments``, or any namespace with
            FedML's keys, e.g. :func:`fedml_heterofl.fedml_bridge.args.fedml_args`). Missing
            command-line defaults (``rank``, ``run_id``, ``role``, ...) and ``worker_num`` are filled in
            as FedML's own argument loader would.
        run_dir: the run directory; FedML's home folder becomes ``run_dir/.fedml``.

    Returns:
        The initialised ``args`` (FedML adds ``rank``, ``comm``, ``client_id_list``, ... for MPI).
        A second call with the same ``args`` returns them unchanged.
    """
    if run_dir is None or str(run_dir) == "":
        raise ValueError("run_dir must be a directory path, got an empty value")
    if getattr(args, INIT_MARK, None) is not None:
        return args
    for key, value in _CLI_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if not hasattr(args, "worker_num") and hasattr(args, "client_num_per_round"):
        args.worker_num = args.client_num_per_round
    disable_config_fetch()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with fedml_home(run_dir) as home:
            args = fedml.init(args, check_env=False, should_init_logs=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    setattr(args, INIT_MARK, str(home))
    log.debug("FedML initialised offline; FedML home %s", home)
    return args
