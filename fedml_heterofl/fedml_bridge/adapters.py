"""Our defenses and attacks in FedML's shapes, and one round of FedML's update list through ``ServerRound``.

* :func:`fedml_round` — FedML's ``[(sample_num, state_dict)]`` -> deltas against the global model ->
  :class:`~fedml_heterofl.simulation.server_round.ServerRound` (fixed attackers' model poisoning, the
  defense, detection metrics) -> kept list and the new global ``state_dict``. Both the
  :class:`~fedml_heterofl.fedml_bridge.aggregator.HeteroFLServerAggregator` and :class:`DefenseAdapter`
  use it.
* :class:`DefenseAdapter` — a FedML ``BaseDefenseMethod`` around one of our defenses, which
  ``FedMLDefender`` builds for our ``defense_type`` names (see :mod:`.registration`). It selects in
  ``defend_before_aggregation`` (kept models; ``get_malicious_client_idxs`` = removed positions) and
  returns our aggregate in ``defend_on_aggregation``.
* :class:`AttackAdapter` — a FedML ``BaseAttackMethod`` around one of our attacks, which
  ``FedMLAttacker`` builds for our ``attack_type`` names: model attacks poison the fixed attackers'
  entries in ``attack_model``; data attacks poison a malicious client's data in ``poison_data``.

Client identity: FedML gives a defense list positions only. Positions are client ids ``0..N-1`` when
every client takes part in every round (cross-silo with ``client_num_per_round ==
client_num_in_total``); otherwise the caller sets ``round_client_ids`` before the hook runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
from fedml.core.security.attack.attack_base import BaseAttackMethod
from fedml.core.security.defense.defense_base import BaseDefenseMethod
from torch import Tensor

from fedml_heterofl.attack.base import apply_model_attack
from fedml_heterofl.defense.base import RoundContext
from fedml_heterofl.fedml_bridge.args import (
    attack_from_args,
    defense_from_args,
    malicious_client_ids,
    round_index,
)
from fedml_heterofl.fedml_bridge.convert import ModelList, StateCodec, StateDict, as_tensors, like, sample_counts
from fedml_heterofl.simulation.local_training import client_seed
from fedml_heterofl.simulation.server_round import SERVER_STREAM, RoundOutcome, ServerRound


@dataclass
class RoundProduct:
    """One round through :func:`fedml_round`.

    Attributes:
        outcome: the :class:`RoundOutcome` (aggregation result, poisoned updates, metrics).
        kept_positions: positions in the input list that the defense kept.
        kept_models: those entries as FedML entries; an attacker's entry carries its poisoned weights.
        global_state: ``w_{t+1}`` as a ``state_dict`` (buffers: see :mod:`.convert`).
    """

    outcome: RoundOutcome
    kept_positions: List[int]
    kept_models: ModelList
    global_state: StateDict


def round_client_ids(ids: Optional[Sequence[int]], n: int, client_num_in_total: int) -> Tensor:
    """Client ids of the ``n`` entries of a round: ``ids`` if given, else positions (see module doc)."""
    if ids is not None:
        out = torch.as_tensor(list(ids), dtype=torch.long)
        if out.shape != (n,):
            raise ValueError(f"round_client_ids has {out.numel()} ids for {n} updates")
        return out
    if n != client_num_in_total:
        raise ValueError(
            f"FedML passed {n} updates without client identities while client_num_in_total="
            f"{client_num_in_total}: list positions are client ids only when every client takes part in "
            "every round (client_num_per_round == client_num_in_total); set round_client_ids otherwise")
    return torch.arange(n)


def fedml_round(server: ServerRound, codec: StateCodec, round_idx: int, global_state: StateDict,
                models: ModelList, client_ids: Tensor) -> RoundProduct:
    """Poison, defend and aggregate FedML's update list ``models`` (full weights) against ``global_state``."""
    if not models:
        raise ValueError("the update list is empty: no client sent a model this round")
    states = [state for _, state in models]
    counts = sample_counts(models).to(codec.device)
    w_t = codec.flatten(global_state)
    outcome = server(round_idx, w_t, client_ids, codec.updates(states, w_t), counts)
    kept = outcome.result.kept.nonzero().flatten().tolist()
    poisoned = set(outcome.malicious.nonzero().flatten().tolist()) if server.attack is not None else set()
    kept_models = [(models[i][0], codec.state(w_t + outcome.updates[i], states[i])) if i in poisoned else models[i]
                   for i in kept]
    buffers = codec.average_buffers([states[i] for i in kept], counts[kept]) if kept else global_state
    return RoundProduct(outcome, kept, kept_models, codec.state(outcome.params, buffers))


class DefenseAdapter(BaseDefenseMethod):
    """One of our defenses as a FedML defense (``FedMLDefender`` builds it with FedML's ``args``).

    Attributes:
        defense: our :class:`~fedml_heterofl.defense.base.Defense`.
        server: the :class:`ServerRound` it runs (no attack: FedML's attack phase comes first).
        round_client_ids: client ids of the next round's entries (``None``: positions).
        last: the last :class:`RoundProduct`.
    """

    def __init__(self, config: Any) -> None:
        self.args = config
        self.defense = defense_from_args(config)
        self.codec: Optional[StateCodec] = None
        self.round_client_ids: Optional[Sequence[int]] = None
        self.last: Optional[RoundProduct] = None
        self.provide()

    def provide(self, *, codec: Optional[StateCodec] = None, **context: Any) -> None:
        """Give the defense what FedML cannot: the model's codec (else FedML's naming rule tells
        weights from BatchNorm statistics) and ServerRound's context (``loss_fn``, ``trigger_set``,
        ``validation_batch``, ``server_update_fn``)."""
        self.codec = codec
        self.server = ServerRound(self.defense, malicious_ids=malicious_client_ids(self.args),
                                  seed=int(getattr(self.args, "random_seed", 0) or 0), **context)

    def defend_before_aggregation(self, raw_client_grad_list: ModelList,
                                  extra_auxiliary_info: Optional[StateDict] = None) -> ModelList:
        """Select: the kept entries (``extra_auxiliary_info`` must be the global ``state_dict``)."""
        if extra_auxiliary_info is None:
            raise ValueError(
                f"defense {self.defense.name!r} needs the global model's state_dict as extra_auxiliary_info: "
                "FedML's ServerAggregator (cross_silo) passes it, FedML's MPI simulation passes None")
        codec = self.codec or StateCodec(extra_auxiliary_info)
        n = len(raw_client_grad_list)
        ids = round_client_ids(self.round_client_ids, n, int(getattr(self.args, "client_num_in_total", n)))
        self.last = fedml_round(self.server, codec, round_index(self.args), extra_auxiliary_info,
                                raw_client_grad_list, ids)
        return self.last.kept_models

    def defend_on_aggregation(self, raw_client_grad_list: ModelList, base_aggregation_func: Any = None,
                              extra_auxiliary_info: Any = None) -> StateDict:
        """Our aggregate of the selection made by :meth:`defend_before_aggregation` (as FedML calls
        them: ``on`` receives the list ``before`` returned)."""
        if self.last is None or len(raw_client_grad_list) != len(self.last.kept_models):
            raise RuntimeError(f"defense {self.defense.name!r}: defend_on_aggregation must receive the list that "
                               "defend_before_aggregation returned in the same round")
        return self.last.global_state

    def get_malicious_client_idxs(self) -> List[int]:
        """Positions removed in the last round."""
        return [] if self.last is None else self.last.outcome.result.removed.tolist()


def is_model_attack(attack: Any) -> bool:
    """Whether an attack poisons updates on the server (a model attack) rather than client data."""
    return callable(getattr(attack, "attack", None))


class AttackAdapter(BaseAttackMethod):
    """One of our attacks as a FedML attack (``FedMLAttacker`` builds it with FedML's ``args``).

    Attributes:
        attack: our attack object.
        model_attack: True for a model attack, False for a data attack.
        malicious_ids: the fixed attackers (:func:`malicious_client_ids`).
        round_client_ids: client ids of the next round's entries (``None``: positions).
        client_id: the client this process trains, for data attacks (``None``: ``args.rank - 1``, the
            cross-silo client of this MPI rank).
    """

    def __init__(self, args: Any) -> None:
        self.args = args
        self.attack = attack_from_args(args)
        self.model_attack = is_model_attack(self.attack)
        self.malicious_ids = frozenset(malicious_client_ids(args))
        self.codec: Optional[StateCodec] = None
        self.round_client_ids: Optional[Sequence[int]] = None
        self.client_id: Optional[int] = None

    def attack_model(self, raw_client_grad_list: ModelList, extra_auxiliary_info: Optional[StateDict] = None
                     ) -> ModelList:
        """Replace the fixed attackers' entries by poisoned weights ``w_t + g̃_i``.

        The attackers know every benign update of the round. The adaptive attack's oracle is our
        defense when ``FedMLDefender`` runs one (it then shares that defense's round context).
        """
        if not self.model_attack:
            raise RuntimeError(f"{type(self.attack).__name__} is a data attack; it poisons client data, not models")
        if extra_auxiliary_info is None:
            raise ValueError("a model attack needs the global model's state_dict as extra_auxiliary_info "
                             "(FedML's MPI simulation passes None; use cross_silo)")
        n = len(raw_client_grad_list)
        ids = round_client_ids(self.round_client_ids, n, int(getattr(self.args, "client_num_in_total", n)))
        malicious = torch.isin(ids, torch.tensor(sorted(self.malicious_ids), dtype=torch.long))
        if not bool(malicious.any()):
            return raw_client_grad_list
        codec = self.codec or StateCodec(extra_auxiliary_info)
        states = [state for _, state in raw_client_grad_list]
        w_t = codec.flatten(extra_auxiliary_info)
        U = codec.updates(states, w_t)
        counts = sample_counts(raw_client_grad_list).to(codec.device)
        round_idx = round_index(self.args)
        defender = _our_defender()
        if defender is not None:
            ctx = defender.server.context(round_idx, w_t, ids, counts)
        else:
            seed = client_seed(int(getattr(self.args, "random_seed", 0) or 0), round_idx, SERVER_STREAM)
            ctx = RoundContext(round_idx=round_idx, global_params=w_t, generator=torch.Generator().manual_seed(seed),
                               client_ids=ids, sample_counts=counts)
        poisoned, _ = apply_model_attack(self.attack, U, malicious, ctx,
                                         None if defender is None else defender.defense)
        out = list(raw_client_grad_list)
        for pos in malicious.nonzero().flatten().tolist():
            row = poisoned[pos]
            out[pos] = (out[pos][0], codec.state(w_t + row, states[pos]))
        return out

    def poisons(self, client_id: Optional[int]) -> bool:
        """Whether ``client_id``'s data is poisoned (a data attack and a fixed attacker)."""
        return not self.model_attack and client_id is not None and int(client_id) in self.malicious_ids

    def is_to_poison_data(self) -> bool:
        """FedML's per-client question, for this process's client (see ``client_id``)."""
        client = self.client_id
        if client is None:
            rank = int(getattr(self.args, "rank", 0) or 0)
            client = rank - 1 if rank >= 1 else None
        return self.poisons(client)

    def poison_data(self, dataset: Any) -> Any:
        """The data attack applied to a client's data, returned in the same container kind."""
        x, y = as_tensors(dataset)
        px, py = self.attack.poison(x, y)
        return like(dataset, px, py, int(getattr(self.args, "batch_size", 32)))


def _our_defender() -> Optional[DefenseAdapter]:
    """``FedMLDefender``'s defense when it is enabled and one of ours."""
    from fedml.core.security.fedml_defender import FedMLDefender

    defender = FedMLDefender.get_instance()
    if defender.is_defense_enabled() and isinstance(defender.defender, DefenseAdapter):
        return defender.defender
    return None
