"""What every backend shares: the round schedule, the per-round record, the summary, and the backend
interface itself (``docs/architecture.md``, "Backends").

A backend runs the rounds of one run (Alg. 1 of the paper: the round's clients train from ``w_t``, the
server poisons, defends and aggregates, ``w_{t+1} = w_t + update``) and writes its run folder. Two
exist — the standalone simulator (:func:`fedml_heterofl.simulation.runner.run_standalone`) and FedML's
MPI cross-silo lifecycle (:func:`fedml_heterofl.fedml_bridge.mpi_backend.run_mpi`) — and they give the
same numbers because both take from here:

* **who takes part** in round t (:func:`participants`: everyone, or a seeded sample of
  ``client_num_per_round``), and **which rounds test** (:func:`is_test_round`);
* **the per-round record** (:func:`round_record`): one row of ``metrics.csv``, the same columns in the
  same order on every backend;
* **the summary** (:func:`summarise`, ``summary.json``) and ``partition.json`` (:func:`write_partition`);
* the run folder's name (:func:`run_name`).

A new backend is one function of the :class:`Backend` shape named in
:data:`fedml_heterofl.backends.BACKENDS`.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Protocol, Union

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.record.store import RunStore
from fedml_heterofl.settings import Settings
from fedml_heterofl.simulation.workload import ClientPlan, Workload


class Backend(Protocol):
    """Run (or resume, where the backend can) the rounds of ``settings`` into the run folder
    ``results_dir / run_name(settings)``; return the summary (:func:`summarise`) in the process that
    holds the server, ``None`` in the others. ``fresh``: first delete the files an earlier run wrote in
    that folder; ``progress``: a progress bar where the backend has one."""

    def __call__(self, settings: Settings, *, results_dir: Optional[str] = None, fresh: bool = False,
                 progress: bool = True) -> Optional[Dict[str, Any]]: ...


#: SeedSequence stream of the per-round client sample
PARTICIPANT_STREAM = 2**62 + 5


def run_name(settings: Settings) -> str:
    """``common_args.run_name``, else ``<dataset>_<model>_<defense>_<attack|none>_s<seed>``."""
    if settings.common_args.run_name:
        return settings.common_args.run_name
    return (f"{settings.data_args.dataset}_{settings.model_args.model}_{settings.defense_name}_"
            f"{settings.attack_name or 'none'}_s{settings.common_args.random_seed}")


def participants(settings: Settings, round_idx: int) -> Tensor:
    """The round's client ids (sorted): everyone, or a seeded sample of ``client_num_per_round``."""
    n, k = settings.train_args.client_num_in_total, settings.train_args.client_num_per_round
    if k == n:
        return torch.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([settings.common_args.random_seed, round_idx,
                                                        PARTICIPANT_STREAM]))
    return torch.from_numpy(np.sort(rng.choice(n, size=k, replace=False)))


def is_test_round(round_idx: int, every: int, rounds: int) -> bool:
    """Whether the global model is evaluated after round ``round_idx`` (0-based): every ``every`` rounds
    (rounds ``every - 1``, ``2·every - 1``, ...) and the last one, on both backends."""
    return (round_idx + 1) % every == 0 or round_idx == rounds - 1


def round_record(round_idx: int, metrics: Mapping[str, Any], evaluation: Optional[Mapping[str, float]], *,
                 time_train: float, time_server: float, time_eval: float) -> Dict[str, Any]:
    """One row of ``metrics.csv``: ``round``, the evaluation (test rounds only), the server round's
    detection metrics and attack report, then the seconds spent training the clients (with communication
    under MPI), in the server round and evaluating."""
    row: Dict[str, Any] = {"round": round_idx}
    row.update(evaluation or {})
    row.update(metrics)
    row.update(time_train=time_train, time_server=time_server, time_eval=time_eval)
    return row


def write_partition(store: RunStore, heterogeneity: Dict[str, Any]) -> None:
    """``partition.json``: each client's load and label diversity (paper §IV)."""
    record = {k: heterogeneity[k] for k in ("load", "labels", "label_entropy")}
    store.write_file("partition.json", json.dumps({"client_id": list(range(len(record["load"]))), **record}))


def summarise(rows: List[Dict[str, Any]], settings: Settings, work: Union[Workload, ClientPlan]) -> Dict[str, Any]:
    """Final and best accuracy, mean removal rates, mean phase times."""
    accs = [(r["round"], r["test_acc"]) for r in rows if "test_acc" in r]

    def mean(key: str) -> float:
        vals = [float(r[key]) for r in rows if key in r and r[key] is not None and not math.isnan(float(r[key]))]
        return sum(vals) / len(vals) if vals else float("nan")

    return {
        "finished": len(rows) == settings.train_args.comm_round,
        "rounds": len(rows),
        "defense": settings.defense_name,
        "attack": settings.attack_name or "none",
        "dataset": settings.data_args.dataset,
        "model": settings.model_args.model,
        "seed": settings.common_args.random_seed,
        "malicious": list(work.malicious),
        "final_acc": accs[-1][1] if accs else float("nan"),
        "final_acc_task": next((r["test_acc_task"] for r in reversed(rows) if "test_acc_task" in r), float("nan")),
        "final_watermark_share": next((r["test_watermark_share"] for r in reversed(rows)
                                       if "test_watermark_share" in r), float("nan")),
        # the clients' mean number of training samples (their partitions, trigger rows not counted)
        "samples_per_client": float(torch.tensor(work.heterogeneity["histogram"], dtype=torch.float64).sum(1).mean()),
        "best_acc": max(a for _, a in accs) if accs else float("nan"),
        "mean_removal_success_rate": mean("removal_success_rate"),
        # share of the adaptive attack's rounds whose oracle predicted the server's kept set exactly
        "oracle_agreement": mean("oracle_agrees"),
        # share of adaptive_deviation's rounds whose oracle predicted the server's aggregate (metrics.aggregates_agree)
        "deviation_agreement": mean("deviation_agrees"),
        "mean_fpr": mean("fpr"),
        "mean_time_train": mean("time_train"),
        "mean_time_server": mean("time_server"),
        "load_cv": work.heterogeneity["load_cv"],
        "mean_label_entropy": work.heterogeneity["mean_label_entropy"],
    }
