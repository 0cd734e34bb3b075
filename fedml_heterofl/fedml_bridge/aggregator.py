"""``HeteroFLServerAggregator``: FedML's server lifecycle running our attacks and defenses.

FedML's cross-silo server calls, per round (FedML 0.9.6 ``cross_silo/server/fedml_aggregator.py``):
``on_before_aggregation(list)`` -> ``aggregate(list)`` -> ``on_after_aggregation(model)`` ->
``set_model_params`` -> ``test``. Here:

* ``on_before_aggregation`` — the updates ``w_i - w_t`` of the round go through one
  :class:`~fedml_heterofl.simulation.server_round.ServerRound`: the fixed attackers' entries are
  replaced by our model attack's poisoned updates (full knowledge of the round's benign updates),
  then our defense selects. Returns the kept entries (attackers' with their poisoned weights) and
  their positions; the round's detection metrics go to :attr:`HeteroFLServerAggregator.history`.
* ``aggregate`` — the defense's aggregate ``w_t + update`` as a ``state_dict``; buffers per
  :mod:`~fedml_heterofl.fedml_bridge.convert` (mean over the kept clients).
* ``on_after_aggregation`` — FedML's own (central DP noise if enabled; no-op otherwise). FedML's
  central-DP clipping runs before the attack as in FedML's hook; FedML's FHE is refused (it hides
  the updates).
* ``test`` — accuracy/loss of the global model, added to the round's history record.

Several clients per FedML entry (the MPI backend's workers): when the entries are
:class:`~fedml_heterofl.fedml_bridge.convert.ClientUpdates`, ``on_before_aggregation`` joins them into
one ``(n, d)`` matrix in client-id order — the standalone simulator's order — and runs the same
:class:`ServerRound`; the kept "positions" it returns are the workers with at least one kept client.
With ``test_set`` the aggregator evaluates the new global model itself, in ``on_after_aggregation``,
on the standalone schedule (:func:`~fedml_heterofl.simulation.rounds.is_test_round`: after every
``frequency_of_the_test``-th round and the last; FedML's own schedule is rounds 0, f, 2f, ...), and
records the round as the standalone does (:func:`~fedml_heterofl.simulation.rounds.round_record`;
``time_train`` is the time since the previous round ended: training, communication and FedML's
bookkeeping; round 0 includes the start-up).

Which defense and attack: the ones ``FedMLDefender``/``FedMLAttacker`` were initialised with (FedML's
``ServerAggregator.__init__`` initialises them from ``args``), i.e. ours when the names are ours,
FedAvg when ``enable_defense`` is false. When either is one of FedML's built-ins (``krum``,
``byzantine``, ...) the hooks are FedML's own (``super()``), with our registered adapters taking
part where configured — FedML then passes no client identities to its built-ins, and the history
records what FedML reports as kept.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from fedml.core import ServerAggregator
from fedml.core.dp.fedml_differential_privacy import FedMLDifferentialPrivacy
from fedml.core.fhe.fhe_agg import FedMLFHE
from fedml.core.security.constants import (
    ATTACK_LABEL_FLIPPING,
    ATTACK_METHOD_BYZANTINE_ATTACK,
    ATTACK_METHOD_DLG,
    BACKDOOR_ATTACK_MODEL_REPLACEMENT,
)
from fedml.core.security.fedml_attacker import FedMLAttacker
from fedml.core.security.fedml_defender import FedMLDefender
from torch import Tensor, nn

from fedml_heterofl.defense import build_defense
from fedml_heterofl.defense.base import Batch, Defense
from fedml_heterofl.fedml_bridge.args import malicious_client_ids, round_index, sgd_settings
from fedml_heterofl.fedml_bridge.adapters import (
    AttackAdapter,
    DefenseAdapter,
    RoundProduct,
    fedml_round,
    round_client_ids,
)
from fedml_heterofl.fedml_bridge.convert import ClientUpdates, ModelList, StateCodec, StateDict, as_tensors, copy_state
from fedml_heterofl.fedml_bridge.trainer import evaluate
from fedml_heterofl.models import ModelLoss, ParamLayout
from fedml_heterofl.record.metrics import EVAL_COLUMNS, detection_metrics
from fedml_heterofl.simulation.local_training import server_update
from fedml_heterofl.simulation.rounds import is_test_round, round_record
from fedml_heterofl.simulation.server_round import ServerRound

#: FedML's built-in server-side model attacks, and its other attack types (constants.py)
FEDML_MODEL_ATTACKS = (ATTACK_METHOD_BYZANTINE_ATTACK, BACKDOOR_ATTACK_MODEL_REPLACEMENT)
FEDML_OTHER_ATTACKS = (ATTACK_LABEL_FLIPPING, ATTACK_METHOD_DLG)


class HeteroFLServerAggregator(ServerAggregator):
    """FedML ``ServerAggregator`` of fedml_heterofl (see module doc).

    Args:
        model: the global model (its parameters are ``w_t``; it is also the architecture that
            evaluates flat parameter vectors for HeteroFL's watermark step and Zeno).
        args: FedML's flat ``args`` (keys: :mod:`~fedml_heterofl.fedml_bridge.args`).
        trigger_set: HeteroFL's ``D_trg`` (needed by step 3).
        validation_batch: the server's validation batch (Zeno).
        root_data: the server's root dataset ``(x, y)`` (FLTrust); the server update ``g_0`` is local
            SGD on it with the clients' settings, seeded by ``(random_seed, round, ROOT_STREAM)``.
        test_set: ``(x, y)``: evaluate on the standalone schedule (module doc); ``None``: record what
            FedML's ``test`` calls measure.
        round_clients: ``round_clients(t)`` -> the clients round ``t`` must hold; workers' updates for any
            other set fail the round (a check of the workers' client assignment).
        attackers_data: the attackers' own training samples ``(x, y)``, for a model attack that evaluates
            models on them (``adaptive_deviation`` with ``harm: loss``).

    Attributes:
        history: one dict per aggregated round: ``round``, the detection metrics and timings of
            :class:`ServerRound` (``removed``, ``tpr``, ``fpr``, ``removed_<step>``, ``time_attack``,
            ``time_defend``, ...), ``kept`` (client ids) and, after ``test``, ``test_acc``/``test_loss``.
        round_client_ids: client ids of the next round's entries, for callers that sample clients
            (``None``: list positions, which FedML's cross-silo uses when all clients take part).
        last: the last :class:`~fedml_heterofl.fedml_bridge.adapters.RoundProduct` (our hooks only).
    """

    def __init__(self, model: nn.Module, args: Any, *, trigger_set: Optional[Batch] = None,
                 validation_batch: Optional[Batch] = None, root_data: Optional[Batch] = None,
                 test_set: Optional[Batch] = None, round_clients: Optional[Callable[[int], Tensor]] = None,
                 attackers_data: Optional[Batch] = None) -> None:
        super().__init__(model, args)
        self.test_set = test_set
        self.round_clients = round_clients
        self._round_start = time.perf_counter()
        self._received = self._round_start
        if FedMLFHE.get_instance().is_fhe_enabled():
            raise ValueError("enable_fhe: FedML's homomorphic encryption hides the updates our attacks and "
                             "defenses work on; allowed: false")
        self.codec = StateCodec.for_model(model)
        self.layout = ParamLayout(model)
        self.malicious_ids = malicious_client_ids(args)
        self.history: List[Dict[str, Any]] = []
        self.round_client_ids: Optional[Sequence[int]] = None
        self.last: Optional[RoundProduct] = None
        self._root = None if root_data is None else tuple(t.to(self.codec.device) for t in as_tensors(root_data))
        self._scratch = copy.deepcopy(model) if root_data is not None else None
        context = dict(loss_fn=ModelLoss(self.model, self.layout), trigger_set=trigger_set,
                       validation_batch=validation_batch,
                       server_update_fn=self._server_update if root_data is not None else None,
                       param_layout=self.layout)
        defender, attacker = _configured()
        if defender is not None:
            defender.provide(codec=self.codec, **context)
        if attacker is not None:
            attacker.codec = self.codec
            if attacker.model_attack:  # in FedML's hooks or in our ServerRound below: the same attack object
                attacker.attack.own_data = attackers_data
        fedml_attacker = FedMLAttacker.get_instance()
        if fedml_attacker.is_enabled and attacker is None and fedml_attacker.attacker is None:
            raise ValueError(f"attack_type {fedml_attacker.attack_type!r} is neither one of fedml_heterofl's attacks "
                             f"nor one of FedML's ({', '.join(FEDML_MODEL_ATTACKS + FEDML_OTHER_ATTACKS)})")
        fedml_defense = FedMLDefender.get_instance().is_defense_enabled() and defender is None
        fedml_model_attack = fedml_attacker.is_enabled and fedml_attacker.attack_type in FEDML_MODEL_ATTACKS
        #: our ServerRound, or None when FedML's built-in defense / model attack runs in FedML's hooks
        self.server: Optional[ServerRound] = None
        if not (fedml_defense or fedml_model_attack):
            defense = defender.defense if defender is not None else build_defense("fedavg")
            _check_context(defense, context)
            model_attack = attacker.attack if attacker is not None and attacker.model_attack else None
            self.server = ServerRound(defense, attack=model_attack, malicious_ids=self.malicious_ids,
                                      seed=int(getattr(args, "random_seed", 0) or 0), **context)

    # -- FedML's abstract methods ------------------------------------------------------------
    def get_model_params(self) -> StateDict:
        """A copy of the global ``state_dict`` (never the live one)."""
        return copy_state(self.model.state_dict())

    def set_model_params(self, model_parameters: StateDict) -> None:
        self.model.load_state_dict(model_parameters)

    def test(self, test_data: Any, device: Any, args: Any) -> Dict[str, float]:
        """Accuracy and loss of the global model on ``test_data``, recorded in the round's history.

        With ``test_set`` nothing is recorded here (the schedule is the standalone's): the round's own
        evaluation is returned when there is one, else the model is evaluated on ``test_data`` (``None``:
        ``test_set``). The server computes on its model's device (FedML's ``device`` argument is not
        used: moving the global model would separate it from the server's flat tensors).
        """
        if self.test_set is not None:
            row = self._this_round()
            if row is not None and EVAL_COLUMNS[0] in row:
                return {k: row[k] for k in EVAL_COLUMNS}
            return evaluate(self.model, self.test_set if test_data is None else test_data)
        metrics = evaluate(self.model, test_data)
        if self.history and self.history[-1]["round"] == round_index(self.args):
            self.history[-1].update({k: metrics[k] for k in EVAL_COLUMNS})
        return metrics

    # -- lifecycle hooks ---------------------------------------------------------------------
    def on_before_aggregation(self, raw_client_model_or_grad_list: ModelList) -> Tuple[ModelList, List[int]]:
        """Model poisoning of the fixed attackers, then the defense's selection (see module doc)."""
        models = raw_client_model_or_grad_list
        round_idx = round_index(self.args)
        self._received = time.perf_counter()
        if models and ClientUpdates.is_payload(models[0][1]):
            return self._client_updates_before(models, round_idx)
        ids = round_client_ids(self.round_client_ids, len(models), int(self.args.client_num_in_total))
        if self.server is None:
            return self._fedml_before(models, ids, round_idx)
        dp = FedMLDifferentialPrivacy.get_instance()
        if dp.is_global_dp_enabled() and dp.is_clipping():  # FedML's central-DP clipping, as in its own hook
            models = dp.global_clip(models)
        self.last = fedml_round(self.server, self.codec, round_idx, self.model.state_dict(), models, ids)
        outcome = self.last.outcome
        self._record(round_idx, outcome.metrics, ids[outcome.result.kept])
        return self.last.kept_models, self.last.kept_positions

    def aggregate(self, raw_client_model_or_grad_list: ModelList) -> StateDict:
        """``w_{t+1}``: the defense's aggregate added to ``w_t``, as a ``state_dict``."""
        if self.server is None:
            return super().aggregate(raw_client_model_or_grad_list)
        if self.last is None or len(raw_client_model_or_grad_list) != len(self.last.kept_models):
            raise RuntimeError("aggregate() must receive the list on_before_aggregation() returned in this round")
        return self.last.global_state

    def on_after_aggregation(self, aggregated_model_or_grad: StateDict) -> StateDict:
        """FedML's own (central DP noise if enabled), then, with ``test_set``, this round's evaluation on the
        standalone schedule and its timings (module doc)."""
        out = super().on_after_aggregation(aggregated_model_or_grad)
        row = self._this_round()
        if self.test_set is not None and row is not None:
            start = time.perf_counter()
            t, evaluation = row.pop("round"), None
            if is_test_round(t, int(self.args.frequency_of_the_test), int(self.args.comm_round)):
                self.model.load_state_dict(out)
                metrics = evaluate(self.model, self.test_set)
                evaluation = {k: metrics[k] for k in EVAL_COLUMNS}
            kept, time_train = row.pop("kept"), row.pop("time_train")
            self.history[-1] = {**round_record(t, row, evaluation, time_train=time_train,
                                               time_server=start - self._received,
                                               time_eval=time.perf_counter() - start), "kept": kept}
        self._round_start = time.perf_counter()
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _record(self, round_idx: int, metrics: Dict[str, Any], kept_ids: Tensor) -> None:
        """The round's history entry as ``on_before_aggregation`` knows it: its metrics, the kept client ids
        and ``time_train`` (since the previous round ended); ``on_after_aggregation`` completes it."""
        self.history.append({"round": round_idx, **metrics, "kept": kept_ids.tolist(),
                             "time_train": self._received - self._round_start})

    def _this_round(self) -> Optional[Dict[str, Any]]:
        """The history record of the current round, if it has one yet."""
        if self.history and self.history[-1]["round"] == round_index(self.args):
            return self.history[-1]
        return None

    def _client_updates_before(self, models: ModelList, round_idx: int) -> Tuple[ModelList, List[int]]:
        """``on_before_aggregation`` for workers' :class:`ClientUpdates` entries (module doc)."""
        if self.server is None:
            raise ValueError("FedML's built-in defenses and model attacks take one client per entry; workers that "
                             "send several clients' updates need fedml_heterofl's defense and attack names")
        dp = FedMLDifferentialPrivacy.get_instance()
        if dp.is_global_dp_enabled() and dp.is_clipping():
            raise ValueError("FedML's central-DP clipping works on one client's state_dict per entry; workers that "
                             "send several clients' updates need it off")
        packets = [ClientUpdates.from_fedml(entry) for _, entry in models]
        wrong = [tuple(p.updates.shape) for p in packets if p.updates.shape[1] != self.codec.d]
        if wrong:
            raise ValueError(f"a worker sent updates of shape {wrong[0]}, but the server's model has d={self.codec.d} "
                             "parameters; workers and server must build the same model")
        stale = sorted({p.round_idx for p in packets} - {round_idx})
        if stale:
            raise RuntimeError(f"round {round_idx}: a worker sent the updates of round {stale[0]}")
        ids = torch.cat([p.client_ids for p in packets])
        owner = torch.repeat_interleave(torch.arange(len(packets)), torch.tensor([len(p.client_ids) for p in packets]))
        ids, order = torch.sort(ids, stable=True)
        if len(ids) == 0:
            raise ValueError(f"round {round_idx}: no worker sent a client's update")
        if bool((ids[1:] == ids[:-1]).any()):
            raise RuntimeError(f"round {round_idx}: client {int(ids[1:][ids[1:] == ids[:-1]][0])} was trained twice")
        if self.round_clients is not None:
            expected = torch.sort(self.round_clients(round_idx)).values
            if not torch.equal(ids, expected):
                raise RuntimeError(f"round {round_idx}: the workers trained clients {ids.tolist()}, but the round's "
                                   f"clients are {expected.tolist()}")
        device = self.codec.device
        U = torch.empty(len(ids), self.codec.d, device=device)  # one (n, d) copy, rows in client-id order
        where = torch.empty_like(order)
        where[order] = torch.arange(len(order))  # row of each received update in U
        start = 0
        for p in packets:
            U[where[start:start + len(p.client_ids)].to(device)] = p.updates.to(device)
            start += len(p.client_ids)
        counts = torch.cat([p.sample_counts for p in packets])[order]
        buffer_rows = torch.cat([p.buffers for p in packets])[order]
        w_t = self.codec.flatten(self.model.state_dict())
        outcome = self.server(round_idx, w_t, ids.to(device), U, counts.to(device))
        kept = outcome.result.kept.cpu()
        buffers = (self.codec.average_buffer_rows(buffer_rows[kept], counts[kept]) if bool(kept.any())
                   else self.model.state_dict())
        positions = sorted(set(owner[order][kept].tolist()))
        self.last = RoundProduct(outcome, positions, [models[j] for j in positions],
                                 self.codec.state(outcome.params, buffers))
        self._record(round_idx, outcome.metrics, ids[kept])
        return self.last.kept_models, positions

    def _fedml_before(self, models: ModelList, ids: Tensor, round_idx: int) -> Tuple[ModelList, List[int]]:
        """FedML's own hook (its built-in attack/defense), with the round's ids given to our adapters."""
        for adapter in _configured():
            if adapter is not None:
                adapter.round_client_ids = ids.tolist()
        kept_models, positions = super().on_before_aggregation(models)
        kept = torch.zeros(len(models), dtype=torch.bool)
        kept[list(positions)] = True
        ours = FedMLAttacker.get_instance().is_enabled and isinstance(FedMLAttacker.get_instance().attacker,
                                                                      AttackAdapter)
        malicious = (torch.isin(ids, torch.tensor(self.malicious_ids, dtype=torch.long)) if ours
                     else torch.zeros_like(kept))
        self._record(round_idx, detection_metrics(kept, malicious, {}), ids[kept])
        return kept_models, list(positions)

    def _server_update(self, round_idx: int, global_params: Tensor) -> Tensor:
        """FLTrust's ``g_0``: local SGD on the root data from ``w_t``."""
        return server_update(self._scratch, self.layout, global_params, self._root,
                             seed=int(getattr(self.args, "random_seed", 0) or 0), round_idx=round_idx,
                             **sgd_settings(self.args))


def _check_context(defense: Defense, context: Dict[str, Any]) -> None:
    """Fail at construction, not in the first round, when the defense needs data the server lacks."""
    given = {"trigger_set": context["trigger_set"], "validation_batch": context["validation_batch"],
             "server_update": context["server_update_fn"]}
    missing = sorted(k for k in defense.requires if given.get(k, True) is None)
    if missing:
        raise ValueError(f"defense {defense.name!r} needs {', '.join(missing)}: pass "
                         f"{', '.join('root_data' if k == 'server_update' else k for k in missing)} to "
                         "HeteroFLServerAggregator")


def _configured() -> Tuple[Optional[DefenseAdapter], Optional[AttackAdapter]]:
    """Our adapters in ``FedMLDefender``/``FedMLAttacker`` where they are enabled."""
    defender, attacker = FedMLDefender.get_instance(), FedMLAttacker.get_instance()
    ours_d = defender.defender if defender.is_defense_enabled() and isinstance(defender.defender, DefenseAdapter) \
        else None
    ours_a = attacker.attacker if attacker.is_enabled and isinstance(attacker.attacker, AttackAdapter) else None
    return ours_d, ours_a
