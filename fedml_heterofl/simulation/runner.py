"""The standalone simulator (``comm_args.backend: single_process``), DESIGN §8-9.

FedML's ``backend: sp`` skips every attack, defense and custom aggregator (notes §0), so the
standalone backend is our own seeded loop. It runs the same two pieces of work that FedML's MPI
processes run inside ``HeteroFLClientTrainer.train`` and ``HeteroFLServerAggregator`` — local SGD
(:func:`~fedml_heterofl.simulation.local_training.local_sgd`, seeded by ``(seed, round, client)``)
and one :class:`~fedml_heterofl.simulation.server_round.ServerRound` (fixed attackers' model
poisoning, the defense, detection metrics) — on data held as tensors, without ``state_dict``
round trips; the same seed gives the same accuracy curve on both backends.

Per round t (Alg. 1): the participating clients train from ``w_t`` (all of them by default; with
``client_num_per_round < client_num_in_total`` a seeded sample), the server poisons and aggregates,
``w_{t+1} = w_t + update``, and the global model is evaluated every ``frequency_of_the_test``
rounds and in the last one. Models without dropout or batch statistics (LR) train many clients at
once (:func:`~fedml_heterofl.simulation.local_training.local_sgd_vectorised`); the CNN and the RNN
(whose clients train faster one per core on a CPU) train one client per core in parallel threads
(:func:`~fedml_heterofl.simulation.local_training.local_sgd_parallel`, ``train_args.client_threads``
of them at once, by default one per intra-op thread); ResNet20 (BatchNorm statistics carried by the
scratch model from one client to the next) one client after another.

Results (:class:`~fedml_heterofl.experiments.store.RunStore`): ``partition.json`` holds each
client's load and label diversity (paper §IV); after every round the checkpoint
(``w_{t+1}``, buffers and every metrics row so far) and ``metrics.csv`` are replaced atomically; a
killed run started again with the same settings continues after the last completed round and ends
with the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fedml_heterofl import components
from fedml_heterofl.attack import ModelAttack
from fedml_heterofl.experiments.metrics import EVAL_COLUMNS, evaluate_model
from fedml_heterofl.experiments.store import RunStore, atomic_write
from fedml_heterofl.models import batched_loss, draws_from_global_rng
from fedml_heterofl.settings import Settings
from fedml_heterofl.simulation.local_training import (
    client_seed,
    local_sgd,
    local_sgd_parallel,
    local_sgd_vectorised,
    server_update,
)
from fedml_heterofl.simulation.server_round import ServerRound
from fedml_heterofl.simulation.workload import Workload, build_workload

log = logging.getLogger(__name__)

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


def can_vectorise(model: nn.Module) -> bool:
    """Whether many copies of a model can train in one ``vmap``: no dropout, no buffers (batch norm)."""
    has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    return not has_dropout and not any(True for _ in model.buffers())


def vectorise_by_default(model: nn.Module, device: torch.device) -> bool:
    """``train_args.vectorised_training: null``: vectorised when it can be, unless on a CPU the model's
    clients train faster one per core (``vectorise_on_cpu = False``: the RNN)."""
    return can_vectorise(model) and (device.type != "cpu" or getattr(model, "vectorise_on_cpu", True))


def _device(settings: Settings) -> torch.device:
    if settings.device_args.using_gpu:
        if not torch.cuda.is_available():
            raise ValueError("device_args.using_gpu: true, but no CUDA device is available; allowed here: false")
        return torch.device(f"cuda:{settings.device_args.gpu_id}")
    return torch.device("cpu")


class Simulation:
    """One standalone run (module doc).

    Args:
        settings: the validated run settings.
        results_dir: where the run folder goes (default ``common_args.results_dir``).
        workload: a prepared :class:`Workload` (built from ``settings`` when omitted).
    """

    def __init__(self, settings: Settings, *, results_dir: Optional[str] = None,
                 workload: Optional[Workload] = None) -> None:
        if settings.comm_args.backend != "single_process":
            raise ValueError(f"comm_args.backend: the standalone simulator runs 'single_process', got "
                             f"{settings.comm_args.backend!r}; use mpirun for 'MPI'")
        self.settings = settings
        self.store = RunStore(results_dir or settings.common_args.results_dir, run_name(settings))
        self.device = _device(settings)
        self.work = workload if workload is not None else build_workload(settings)
        self.args = settings.to_fedml_args()
        self.seed = settings.common_args.random_seed
        self.sgd = components.sgd_settings(self.args)
        self.model = self.work.model.to(self.device)
        self.x, self.y = self.work.x.to(self.device), self.work.y.to(self.device)
        vectorise = settings.train_args.vectorised_training
        self.vectorise = vectorise_by_default(self.model, self.device) if vectorise is None else vectorise
        if self.vectorise and not can_vectorise(self.model):
            raise ValueError(f"train_args.vectorised_training: {settings.model_args.model} has dropout or batch "
                             "norm and cannot be trained vectorised; allowed: false or null (auto)")
        attack = components.attack_from_args(self.args)
        defense = components.defense_from_args(self.args)
        self.server = ServerRound(
            defense, attack=attack if isinstance(attack, ModelAttack) else None,
            malicious_ids=self.work.malicious, seed=self.seed,
            loss_fn=lambda p, b: batched_loss(self.model, self.work.layout, p, b),
            trigger_set=_to(self.work.trigger_set, self.device),
            validation_batch=_to(self.work.validation, self.device),
            server_update_fn=self._server_update)

    # -- one round -----------------------------------------------------------------------------
    def train(self, round_idx: int, clients: Tensor, w: Tensor) -> Tensor:
        """The clients' honest updates ``(k, d)`` from ``w``; rows in ``clients`` order."""
        seeds = [client_seed(self.seed, round_idx, int(c)) for c in clients]
        index = [self.work.client_index[int(c)].to(self.device) for c in clients]
        if self.vectorise:
            chunk = self.settings.train_args.vectorised_chunk
            return torch.cat([
                local_sgd_vectorised(self.model, self.work.layout, w, self.x, self.y, index[s:s + chunk],
                                     seeds=seeds[s:s + chunk], **self.sgd)
                for s in range(0, len(index), chunk)])
        workers = self.client_threads
        if workers == 1 or draws_from_global_rng(self.model) or any(True for _ in self.model.buffers()):
            return torch.stack([local_sgd(self.model, self.work.layout, w, self.x[ix], self.y[ix], seed=sd, **self.sgd)
                                for ix, sd in zip(index, seeds)])
        return local_sgd_parallel(self.model, self.work.layout, w, self.x, self.y, index, seeds=seeds, workers=workers,
                                  **self.sgd)

    @property
    def client_threads(self) -> int:
        """``train_args.client_threads``, else torch's intra-op thread count on a CPU and 1 on a GPU."""
        configured = self.settings.train_args.client_threads
        if configured is not None:
            return configured
        return torch.get_num_threads() if self.device.type == "cpu" else 1

    def _server_update(self, round_idx: int, w: Tensor) -> Tensor:
        """FLTrust's ``g_0``: local SGD on the server's root data from ``w_t``."""
        return server_update(self.model, self.work.layout, w, _to(self.work.root, self.device), seed=self.seed,
                             round_idx=round_idx, **self.sgd)

    def evaluate(self, w: Tensor) -> Dict[str, float]:
        self.work.layout.load(self.model, w)
        out = evaluate_model(self.model, *self.work.test)
        return {k: out[k] for k in EVAL_COLUMNS}

    # -- the loop ------------------------------------------------------------------------------
    def run(self, *, progress: bool = True) -> Dict[str, Any]:
        """Run (or resume) every round; returns the summary written to ``summary.json``."""
        settings, store = self.settings, self.store
        config = settings.to_dict()
        handler = store.log_handler()
        logging.getLogger("fedml_heterofl").addHandler(handler)
        try:
            w, rows, start = self._resume(config)
            store.write_config(config)
            heterogeneity = {k: self.work.heterogeneity[k] for k in ("load", "labels", "label_entropy")}
            atomic_write(store.path / "partition.json", json.dumps({"client_id": list(range(len(self.work.parts))),
                                                                    **heterogeneity}))
            rounds = settings.train_args.comm_round
            every = settings.validation_args.frequency_of_the_test
            bar = tqdm(range(start, rounds), initial=start, total=rounds, desc=store.path.name,
                       disable=not progress or bool(os.environ.get("FEDML_HETEROFL_QUIET")), leave=False)
            for t in bar:
                t0 = time.perf_counter()
                clients = participants(settings, t)
                U = self.train(t, clients, w)
                t1 = time.perf_counter()
                counts = self.work.sample_counts[clients]
                outcome = self.server(t, w, clients.to(self.device), U, counts.to(self.device))
                w = outcome.params
                t2 = time.perf_counter()
                row: Dict[str, Any] = {"round": t}
                if (t + 1) % every == 0 or t == rounds - 1:
                    row.update(self.evaluate(w))
                row.update(outcome.metrics)
                row.update(time_train=t1 - t0, time_server=t2 - t1, time_eval=time.perf_counter() - t2)
                rows.append(row)
                store.save_round({"round": t, "params": w.cpu(), "metrics": rows}, rows)
                if "test_acc" in row:
                    bar.set_postfix(acc=f"{row['test_acc']:.4f}")
                    log.debug("round %d: test accuracy %.4f, removed %d (attackers %s)", t, row["test_acc"],
                             row["removed"], row["removed_malicious"])
            summary = summarise(rows, settings, self.work)
            store.write_summary(summary)
            return summary
        finally:
            logging.getLogger("fedml_heterofl").removeHandler(handler)
            handler.close()

    def _resume(self, config: Dict[str, Any]):
        """``(w, rows, first round)`` from the checkpoint when the stored config matches."""
        ckpt = self.store.load_checkpoint()
        if ckpt is None:
            return self.work.init_params.to(self.device), [], 0
        if not self.store.config_matches(config):
            raise ValueError(f"{self.store.path} holds a run with a different configuration; set "
                             "common_args.run_name to a new name, or pass --fresh to start over")
        rows = list(ckpt["metrics"])
        log.info("resuming %s after round %d", self.store.path, ckpt["round"])
        self.store.write_metrics(rows)
        return ckpt["params"].to(self.device), rows, int(ckpt["round"]) + 1


def summarise(rows: List[Dict[str, Any]], settings: Settings, work: Workload) -> Dict[str, Any]:
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
        "best_acc": max(a for _, a in accs) if accs else float("nan"),
        "mean_removal_success_rate": mean("removal_success_rate"),
        "mean_fpr": mean("fpr"),
        "mean_time_train": mean("time_train"),
        "mean_time_server": mean("time_server"),
        "load_cv": work.heterogeneity["load_cv"],
        "mean_label_entropy": work.heterogeneity["mean_label_entropy"],
    }


def _to(batch: Optional[Any], device: torch.device) -> Optional[Any]:
    return None if batch is None else tuple(t.to(device) for t in batch)
