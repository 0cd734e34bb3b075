"""The standalone backend (``comm_args.backend: single_process``): :func:`run_standalone`.

FedML 0.9.6's ``backend: sp`` skips every attack, defense and custom aggregator, so the
standalone backend is our own seeded loop. It runs the same two pieces of work that FedML's MPI
processes run inside ``HeteroFLWorkerTrainer.train`` and ``HeteroFLServerAggregator`` — local SGD
(:func:`~fedml_heterofl.simulation.clients.train_clients`, seeded by ``(seed, round, client)``)
and one :class:`~fedml_heterofl.simulation.server_round.ServerRound` (fixed attackers' model
poisoning, the defense, detection metrics) — on data held as tensors, without ``state_dict``
round trips; the same seed gives the same accuracy curve on both backends.

Per round t (Alg. 1): the participating clients train from ``w_t`` (all of them by default; with
``client_num_per_round < client_num_in_total`` a seeded sample, :func:`participants`, which the MPI
backend draws too, :mod:`~fedml_heterofl.simulation.rounds`), the server poisons and aggregates,
``w_{t+1} = w_t + update``, and the global model is evaluated every ``frequency_of_the_test``
rounds and in the last one (:func:`~fedml_heterofl.simulation.rounds.is_test_round`). Models without dropout or batch statistics (LR) train many
clients at once (:func:`~fedml_heterofl.simulation.local_training.local_sgd_vectorised`); the CNN and the RNN
(whose clients train faster one per core on a CPU) train one client per core in parallel threads
(:func:`~fedml_heterofl.simulation.local_training.local_sgd_parallel`, ``train_args.client_threads`` of them at
once, by default one per intra-op thread); ResNet20 (BatchNorm statistics carried by the scratch model from one
client to the next) one client after another (:func:`~fedml_heterofl.simulation.clients.train_clients`).

Results (:class:`~fedml_heterofl.record.store.RunStore`): ``partition.json`` holds each
client's load and label diversity (paper §IV); after every round the checkpoint
(``w_{t+1}``, every metrics row so far and the settings' identity) and ``metrics.csv`` are replaced
atomically, the checkpoint before it kept as the previous one; ``run.log`` holds the run's log lines.
A killed run started again with the same settings continues after the last completed round and ends
with the same numbers as an uninterrupted run; with settings of another identity
(:attr:`~fedml_heterofl.settings.Settings.identity`: any value that can change a number) it refuses
to start rather than resume, and ``fresh=True`` (``--fresh``) starts over.

Start-up does every check before the data is loaded and before the run folder is made — the
results folder can be written, the attack and defense work with the run's n and f
(:func:`~fedml_heterofl.settings.check_dry_round`), an existing checkpoint is intact and belongs
to these settings — so a start that fails leaves nothing behind; a folder that is not a run folder is
refused. A run holds its folder's lock (:meth:`~fedml_heterofl.record.store.RunStore.lock`);
a failure writes its traceback to ``run.log``, and one before any round was saved removes the rest of
what the run wrote. A first round in which every
client's local training overflows (from ``w_0``, so the training settings and not an attack are the
cause) stops the run with a :class:`~fedml_heterofl.settings.SettingsError` naming the learning rate.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Dict, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fedml_heterofl.attack import ModelAttack
from fedml_heterofl.defense.rows import finite_rows
from fedml_heterofl.models import ModelLoss
from fedml_heterofl.record.metrics import EVAL_COLUMNS, evaluate_model
from fedml_heterofl.record.store import LOCK, MARKER, RunStore, StoreError
from fedml_heterofl.settings import Settings, SettingsError, check_dry_round
from fedml_heterofl.simulation.clients import client_threads, train_clients, vectorised
from fedml_heterofl.simulation.local_training import client_seed, server_update
from fedml_heterofl.simulation.rounds import (
    is_test_round,
    participants,
    round_record,
    run_name,
    summarise,
    write_partition,
)
from fedml_heterofl.simulation.server_round import ServerRound
from fedml_heterofl.simulation.workload import Workload, attackers_data, build_workload

log = logging.getLogger(__name__)

def _device(settings: Settings) -> torch.device:
    if settings.device_args.using_gpu:
        count = torch.cuda.device_count()
        if count == 0:
            raise SettingsError("device_args.using_gpu: true, but no CUDA device is available; allowed here: false")
        if settings.device_args.gpu_id >= count:
            raise SettingsError(f"device_args.gpu_id: {settings.device_args.gpu_id}, but this machine has {count} "
                                f"CUDA device(s); allowed: 0 to {count - 1}")
        return torch.device(f"cuda:{settings.device_args.gpu_id}")
    return torch.device("cpu")


class Simulation:
    """One standalone run (module doc).

    Args:
        settings: the validated run settings.
        results_dir: where the run folder goes (default ``common_args.results_dir``).
        workload: a prepared :class:`Workload` (built from ``settings`` when omitted).
        fresh: start over: ignore an existing checkpoint and delete the files a run wrote in the run folder
            when the run starts (:meth:`~fedml_heterofl.record.store.RunStore.clear`).

    Raises (at construction, before the data is loaded): :class:`SettingsError`, or
    :class:`~fedml_heterofl.record.store.StoreError` for a results folder that cannot be written
    or a checkpoint that is damaged (with no intact previous one) or belongs to other settings.
    """

    def __init__(self, settings: Settings, *, results_dir: Optional[str] = None,
                 workload: Optional[Workload] = None, fresh: bool = False) -> None:
        if settings.comm_args.backend != "single_process":
            raise SettingsError(f"comm_args.backend: the standalone simulator runs 'single_process', got "
                                f"{settings.comm_args.backend!r}; start 'MPI' runs with mpirun")
        self.settings = settings
        self.identity = settings.identity
        self.config = settings.to_dict()
        name = run_name(settings)
        self.device = _device(settings)
        self.store = RunStore(results_dir or settings.common_args.results_dir, name)
        self.store.check_writable()
        self.fresh = fresh
        self.checkpoint = None if fresh else self.store.checkpoint_of(self.identity, self.config)
        check_dry_round(settings)
        self.work = workload if workload is not None else build_workload(settings)
        self.seed = settings.common_args.random_seed
        self.sgd = settings.sgd
        self.model = self.work.model.to(self.device)
        self.x, self.y = self.work.x.to(self.device), self.work.y.to(self.device)
        self.vectorise = vectorised(settings, self.model, self.device)
        attack, defense = settings.attack(), settings.defense()
        self.server = ServerRound(
            defense, attack=attack if isinstance(attack, ModelAttack) else None,
            malicious_ids=self.work.malicious, seed=self.seed,
            loss_fn=ModelLoss(self.model, self.work.layout),
            trigger_set=_to(self.work.trigger_set, self.device),
            validation_batch=_to(self.work.validation, self.device),
            server_update_fn=self._server_update, param_layout=self.work.layout,
            attackers_data=_to(attackers_data(self.work.parts, self.work.malicious,
                                              lambda ix: (self.work.x[ix], self.work.y[ix])), self.device))

    # -- one round -----------------------------------------------------------------------------
    def train(self, round_idx: int, clients: Tensor, w: Tensor) -> Tensor:
        """The clients' honest updates ``(k, d)`` from ``w``; rows in ``clients`` order."""
        seeds = [client_seed(self.seed, round_idx, int(c)) for c in clients]
        index = [self.work.client_index[int(c)].to(self.device) for c in clients]
        return train_clients(self.model, self.work.layout, w, self.x, self.y, index, seeds, vectorise=self.vectorise,
                             chunk=self.settings.train_args.vectorised_chunk,
                             threads=self.client_threads, **self.sgd)

    @property
    def client_threads(self) -> int:
        """Clients trained at once in threads (:func:`~fedml_heterofl.simulation.clients.client_threads`,
        resolved at each round: torch's thread count may change between rounds)."""
        return client_threads(self.settings.train_args.client_threads, self.device)

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
        """Run (or resume) every round, holding the run folder's lock; returns the summary written to
        ``summary.json``. The traceback of a failure goes to ``run.log``; a run that fails before any
        round was saved removes what it wrote except ``run.log``, and its error says so."""
        store = self.store
        with store.lock():
            if self.fresh:
                store.clear()
            elif self.checkpoint is None:  # another run may have written one since start-up
                self.checkpoint = self.store.checkpoint_of(self.identity, self.config)
            handler = store.log_handler()
            logging.getLogger("fedml_heterofl").addHandler(handler)
            try:
                return self._rounds(progress)
            except BaseException as exc:
                handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "run %s failed", (store.path,),
                                              sys.exc_info()))
                if not store.checkpoint.exists() and not store.previous.exists():
                    store.clear(keep=(MARKER, LOCK, "run.log"))
                    exc.add_note(f"{store.path} keeps only run.log (with the traceback)")
                raise
            finally:
                logging.getLogger("fedml_heterofl").removeHandler(handler)
                handler.close()

    def _rounds(self, progress: bool) -> Dict[str, Any]:
        """The rounds from the checkpoint (or the first) to the last, then the summary."""
        settings, store = self.settings, self.store
        w, rows, start = self._resume()
        rounds = settings.train_args.comm_round
        log.info("run %s: %s/%s, %s vs %s, %d clients (%d attackers), %d rounds, starting at round %d; "
                 "identity %s", store.path, settings.data_args.dataset, settings.model_args.model,
                 settings.defense_name, settings.attack_name or "no attack", len(self.work.parts),
                 len(self.work.malicious), rounds, start, self.identity[:12])
        store.write_config(self.config)
        write_partition(store, self.work.heterogeneity)
        every = settings.validation_args.frequency_of_the_test
        bar = tqdm(range(start, rounds), initial=start, total=rounds, desc=store.path.name,
                   disable=not progress or bool(os.environ.get("FEDML_HETEROFL_QUIET")), leave=False)
        for t in bar:
            t0 = time.perf_counter()
            clients = participants(settings, t)
            U = self.train(t, clients, w)
            if t == 0:
                self._check_first_round(U)
            t1 = time.perf_counter()
            counts = self.work.sample_counts[clients]
            outcome = self.server(t, w, clients.to(self.device), U, counts.to(self.device))
            w = outcome.params
            t2 = time.perf_counter()
            evaluation = self.evaluate(w) if is_test_round(t, every, rounds) else None
            row = round_record(t, outcome.metrics, evaluation, time_train=t1 - t0, time_server=t2 - t1,
                               time_eval=time.perf_counter() - t2)
            rows.append(row)
            store.save_round({"round": t, "params": w.cpu(), "metrics": rows, "identity": self.identity}, rows)
            if "test_acc" in row:
                bar.set_postfix(acc=f"{row['test_acc']:.4f}")
                log.debug("round %d: test accuracy %.4f, removed %d (attackers %s)", t, row["test_acc"],
                          row["removed"], row["removed_malicious"])
        summary = summarise(rows, settings, self.work)
        store.write_summary(summary)
        log.info("run %s finished: final accuracy %.4f (best %.4f) after %d rounds", store.path,
                 summary["final_acc"], summary["best_acc"], summary["rounds"])
        return summary

    def _resume(self):
        """``(w, rows, first round)``: from the checkpoint found at start-up, else ``w_0``."""
        ckpt = self.checkpoint
        if ckpt is None:
            return self.work.init_params.to(self.device), [], 0
        if ckpt["params"].numel() != self.work.layout.d:
            raise StoreError(f"{self.store.checkpoint} is damaged: it holds {ckpt['params'].numel()} parameters, "
                             f"the model has d={self.work.layout.d}; start the run over with --fresh")
        rows = list(ckpt["metrics"])
        log.info("resuming %s after round %d", self.store.path, ckpt["round"])
        self.store.write_metrics(rows)
        return ckpt["params"].to(self.device), rows, int(ckpt["round"]) + 1

    def _check_first_round(self, updates: Tensor) -> None:
        """:class:`SettingsError` when every client's training from ``w_0`` overflowed: no attack has
        acted yet, so the training settings make every update non-finite and the model could never move."""
        if not bool(finite_rows(updates)[0].any()):
            train = self.settings.train_args
            raise SettingsError(f"train_args.learning_rate: local training from the initial model overflowed on "
                                f"every client in round 0 (learning_rate={train.learning_rate}, momentum="
                                f"{train.momentum}, weight_decay={train.weight_decay}); lower the learning rate")


def run_standalone(settings: Settings, *, results_dir: Optional[str] = None, fresh: bool = False,
                   progress: bool = True) -> Dict[str, Any]:
    """The standalone backend (:class:`~fedml_heterofl.simulation.rounds.Backend`): one :class:`Simulation`,
    run (or resumed) to its last round in this process."""
    return Simulation(settings, results_dir=results_dir, fresh=fresh).run(progress=progress)


def _to(batch: Optional[Any], device: torch.device) -> Optional[Any]:
    return None if batch is None else tuple(t.to(device) for t in batch)
