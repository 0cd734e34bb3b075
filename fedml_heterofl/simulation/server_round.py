"""The server's side of one round as plain tensor code: model poisoning, then the defense.

Both backends call this: ``fedml_bridge``'s ``ServerAggregator`` (FedML's MPI cross-silo lifecycle)
and the standalone simulator. Given the honest updates of the round's clients it

1. replaces the rows of the fixed malicious clients by the model attack's poisoned updates (the
   attackers know every benign update of the round — full knowledge — unless the attack is
   configured for partial knowledge, which it handles itself);
2. builds the :class:`RoundContext` with only the fields the defense requires (FLTrust's server
   update costs a local training run, so it is computed only for rules that read it);
3. runs the defense, adds its aggregate to ``w_t`` and reports detection metrics.

Near a diverged model (e.g. FedAvg after a few rounds of sign flipping) some clients' local training
overflows: the attack works with the finite rows, the defense removes the others as malformed, and
the run goes on and records what the model scores (:func:`~fedml_heterofl.attack.base.apply_model_attack`).

Randomness: the round's generator is seeded from ``(seed, round)`` alone, so a resumed run, or the
other backend, draws the same numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, Optional

import torch
from torch import Tensor

from fedml_heterofl.attack.base import ModelAttack, apply_model_attack
from fedml_heterofl.defense.base import AggregationResult, Batch, Defense, LossFn, RoundContext
from fedml_heterofl.record.metrics import aggregates_agree, detection_metrics, kept_sets_agree
from fedml_heterofl.simulation.local_training import client_seed

#: stream id of the server's generator in :func:`client_seed` (client ids are non-negative)
SERVER_STREAM = 2**62


@dataclass
class RoundOutcome:
    """``params`` = ``w_{t+1}``; ``updates`` as aggregated (poisoned rows included); ``malicious``
    marks the attackers' rows; ``metrics`` holds detection numbers, attack report and timings."""

    params: Tensor
    result: AggregationResult
    updates: Tensor
    malicious: Tensor
    metrics: Dict[str, Any] = field(default_factory=dict)


class ServerRound:
    """Server step of Alg. 1 (lines 7-18) with the fixed attackers' model poisoning before it.

    Args:
        defense: the aggregation rule.
        attack: a model attack (``attack(benign, own, ctx, defense) -> (f, d)``), or None (no
            attack, or a data attack that acts on the clients).
        malicious_ids: the fixed attacker client ids.
        seed: the run seed.
        loss_fn, trigger_set, validation_batch: context for rules that evaluate models.
        server_update_fn: ``(round, w_t) -> g_0``, the server's own update on its root data (FLTrust).
        param_layout: the model's :class:`~fedml_heterofl.models.ParamLayout`, for rules that work on
            per-layer tensors (FedML's own defenses; without it they see one flat tensor).
        attackers_data: the attackers' own training samples, handed to the attack
            (:attr:`ModelAttack.own_data <fedml_heterofl.attack.base.ModelAttack.own_data>`); ``None`` leaves
            the attack's own as it is.
    """

    def __init__(
        self,
        defense: Defense,
        *,
        attack: Optional[ModelAttack] = None,
        malicious_ids: Collection[int] = (),
        seed: int = 0,
        loss_fn: Optional[LossFn] = None,
        trigger_set: Optional[Batch] = None,
        validation_batch: Optional[Batch] = None,
        server_update_fn: Optional[Callable[[int, Tensor], Tensor]] = None,
        param_layout: Optional[Any] = None,
        attackers_data: Optional[Batch] = None,
    ) -> None:
        self.defense = defense
        self.attack = attack
        if attack is not None and attackers_data is not None:  # else the attack keeps what it was given
            attack.own_data = attackers_data
        self.malicious_ids = torch.tensor(sorted(int(i) for i in malicious_ids), dtype=torch.long)
        self.seed = seed
        self.loss_fn = loss_fn
        self.trigger_set = trigger_set
        self.validation_batch = validation_batch
        self.server_update_fn = server_update_fn
        self.param_layout = param_layout

    def context(self, round_idx: int, global_params: Tensor, client_ids: Tensor,
                sample_counts: Optional[Tensor] = None) -> RoundContext:
        """The round's context, with the fields the defense requires."""
        needs = set(self.defense.requires)
        available = {
            "loss_fn": self.loss_fn, "trigger_set": self.trigger_set, "validation_batch": self.validation_batch,
        }
        missing = [k for k in needs if k in available and available[k] is None]
        available["param_layout"] = self.param_layout  # optional: a rule without it sees one flat tensor
        if "server_update" in needs and self.server_update_fn is None:
            missing.append("server_update")
        if missing:
            raise ValueError(f"defense {self.defense.name!r} needs {', '.join(sorted(missing))}, which the "
                             "server was not given")
        return RoundContext(
            round_idx=round_idx,
            global_params=global_params,
            generator=torch.Generator().manual_seed(client_seed(self.seed, round_idx, SERVER_STREAM)),
            client_ids=client_ids,
            sample_counts=sample_counts,
            **{k: v for k, v in available.items() if k in needs},
            server_update=self.server_update_fn(round_idx, global_params) if "server_update" in needs else None,
        )

    def __call__(self, round_idx: int, global_params: Tensor, client_ids: Tensor, updates: Tensor,
                 sample_counts: Optional[Tensor] = None) -> RoundOutcome:
        """Poison, defend and aggregate one round's ``updates`` (rows in ``client_ids`` order)."""
        timings: Dict[str, float] = {}
        start = time.perf_counter()
        ctx = self.context(round_idx, global_params, client_ids, sample_counts)
        malicious = torch.isin(client_ids, self.malicious_ids)
        report: Dict[str, Any] = {}
        predicted = predicted_update = None
        if self.attack is not None and bool(malicious.any()):
            updates, predicted = apply_model_attack(self.attack, updates, malicious, ctx, self.defense)
            report = dict(self.attack.report)
            predicted_update = getattr(self.attack, "predicted_update", None)
        timings["time_attack"] = time.perf_counter() - start
        start = time.perf_counter()
        result = self.defense(updates, ctx)
        timings["time_defend"] = time.perf_counter() - start
        metrics: Dict[str, Any] = detection_metrics(result.kept, malicious, result.removed_by)
        metrics.update({f"attack_{k}": v for k, v in report.items() if isinstance(v, (int, float, bool, str))})
        if predicted is not None:  # the attack's oracle predicted this decision: was it exact?
            metrics["oracle_agrees"] = float(kept_sets_agree(predicted, result.kept.cpu(), updates))
        if predicted_update is not None:  # ... and this aggregate (Eq. 7's search: adaptive_deviation)
            metrics["deviation_agrees"] = float(aggregates_agree(result.update, predicted_update))
        metrics.update(timings)
        metrics["all_removed"] = bool(result.diagnostics.get("all_removed", False))
        return RoundOutcome(global_params + result.update, result, updates, malicious, metrics)
