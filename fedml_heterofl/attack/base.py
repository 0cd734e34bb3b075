"""Contracts shared by every attack, the checks of their inputs and parameters, and the attack registry.

* :class:`ModelAttack`: ``attack(benign (k, d), own (f, d), ctx, defense=None) -> (f, d)`` poisoned
  updates. ``benign`` are the updates of the round's honest clients, ``own`` the honest updates the f
  attackers computed themselves. ``ctx`` describes the rows of ``cat(benign, own)`` in that order
  (:func:`attack_context`); the attack never consumes ``ctx.generator`` (the defense that runs
  after it draws the same numbers whatever the attack did), it derives its own generator
  (:func:`attack_generator`). After each call ``report`` says what the attack did.
* :class:`DataAttack`: ``poison(x, y) -> (x, y)`` transforms a malicious client's training data.
* Attackers are a fixed set of f client ids for the whole run (:func:`choose_attackers`), not
  re-drawn each round as FedML does, so removal rates and TPR/FPR mean something.

The directions and the scale search several attacks share are in :mod:`~fedml_heterofl.attack.gamma_search`.
"""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.defense.base import Defense, RoundContext
from fedml_heterofl.defense.rows import Batch, finite_rows
from fedml_heterofl.registry import Registry

log = logging.getLogger(__name__)

#: SeedSequence stream of the attacker draw (client ids are below 2**62; the server uses 2**62)
MALICIOUS_STREAM = 2**62 + 1
#: SeedSequence stream of an attack's own random choices within a round
ATTACK_STREAM = 2**62 + 3
#: SeedSequence stream of an attack's draw of its own training samples within a round
OWN_DATA_STREAM = 2**62 + 6
#: knowledge settings (NDSS'21 §4): the round's benign updates (their released code's reference set),
#: those and the attackers' own honest updates, or only the attackers' own (:func:`reference_updates`)
KNOWLEDGE = ("full", "full_with_own", "partial")


def choose_attackers(num_clients: int, f: int, seed: int) -> Tuple[int, ...]:
    """The f fixed attackers: a seeded draw without replacement from ``0..num_clients-1``, sorted.

    The same ``(seed, num_clients, f)`` give the same ids in every process and on every backend.
    """
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"the number of attackers f must be an integer >= 0, got {f!r}")
    if f > 0 and f >= num_clients:
        raise ValueError(f"f={f} attackers must be fewer than the {num_clients} clients")
    if f == 0:
        return ()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), MALICIOUS_STREAM]))
    return tuple(sorted(int(i) for i in rng.choice(num_clients, size=f, replace=False)))


def attack_context(ctx: RoundContext, benign: Tensor, own: Tensor) -> RoundContext:
    """``ctx`` of the rows in round order -> the context of ``cat(U[benign], U[own])`` (boolean
    masks over the round's rows), the order in which a :class:`ModelAttack` sees (and its oracle
    calls the defense on) the round's updates."""
    order = torch.cat([benign.nonzero().flatten(), own.nonzero().flatten()])
    return ctx.subset(order, benign.numel())


class Poisoned(NamedTuple):
    """The round's updates after a model attack, and the kept mask its oracle predicted for them
    (round order; ``None`` when the attack made no prediction about this round)."""

    updates: Tensor
    predicted_kept: Optional[Tensor]


def apply_model_attack(attack: "ModelAttack", updates: Tensor, malicious: Tensor, ctx: RoundContext,
                       defense: Optional[Defense] = None) -> Poisoned:
    """``updates`` (round order) with the rows of ``malicious`` replaced by ``attack``'s poisoned ones.

    Rows with NaN/Inf entries (clients whose local training overflowed, as near a diverged model) are
    left as they are, for the defense to remove as malformed: the attack sees, and its oracle calls
    the defense on, the finite rows only (after screening, the defense's real call works on those
    same rows), and an attacker whose own honest update is non-finite sends it unchanged. With no
    finite attacker row the attack is not called (its ``report`` is emptied).

    An attack that predicts the defense's decision (:attr:`ModelAttack.prediction`, over
    ``cat(benign, own)``) has it mapped to round order, the non-finite rows predicted removed. Its
    predicted aggregate (:attr:`ModelAttack.predicted_update`) needs no mapping (a sum does not depend
    on the rows' order); it is emptied, with the report, when the attack is not called.
    """
    finite, _ = finite_rows(updates)
    crafting = malicious & finite
    if not bool(finite.all()):
        log.warning("rows %s of the round's updates are non-finite (local training overflowed); the attack "
                    "uses the %d finite rows", (~finite).nonzero().flatten().tolist(), int(finite.sum()))
    if not bool(crafting.any()):
        attack.report, attack.prediction, attack.predicted_update = {}, None, None
        return Poisoned(updates, None)
    known = ~malicious & finite
    out = updates.clone()
    out[crafting] = attack.attack(updates[known], updates[crafting], attack_context(ctx, known, crafting),
                                  defense=defense).to(updates.dtype)
    predicted = None
    if getattr(attack, "prediction", None) is not None:
        predicted = torch.zeros(updates.shape[0], dtype=torch.bool)
        predicted[torch.cat([known.nonzero().flatten(), crafting.nonzero().flatten()])] = attack.prediction
    return Poisoned(out, predicted)


def attack_generator(ctx: RoundContext, stream: int = ATTACK_STREAM) -> torch.Generator:
    """A generator for an attack's own draws in this round, derived from (not drawn from) the
    round's generator, so the defense that runs after the attack sees the same numbers; ``stream``
    separates independent draws (:data:`ATTACK_STREAM`, :data:`OWN_DATA_STREAM`)."""
    seed = np.random.SeedSequence([ctx.generator.initial_seed(), stream]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(seed) >> 1)


class ModelAttack(ABC):
    """A local model poisoning attack (module doc). ``name`` is the registry key."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        #: what the last call did (numbers, or a short name, so it can go into the round's metrics)
        self.report: Dict[str, Any] = {}
        #: the kept mask over ``cat(benign, poisoned)`` that the last call's oracle predicted for the
        #: rows it returned, or ``None`` (no oracle, or one that did not see the real round)
        self.prediction: Optional[Tensor] = None
        #: the aggregate the last call's oracle predicted for the rows it returned, or ``None``
        self.predicted_update: Optional[Tensor] = None
        #: the attackers' own training samples ``(x, y)`` (the union of their partitions), for an attack
        #: that evaluates models on them; the server round hands them over (:func:`attackers_data
        #: <fedml_heterofl.simulation.workload.attackers_data>`), ``None`` where no caller did
        self.own_data: Optional[Batch] = None

    def attack(self, benign: Tensor, own: Tensor, ctx: Optional[RoundContext] = None,
               defense: Optional[Defense] = None) -> Tensor:
        """The f poisoned updates, shape ``own.shape``; validates the inputs (see :func:`check_inputs`)."""
        ctx = ctx if ctx is not None else RoundContext()
        check_inputs(benign, own)
        self.prediction = self.predicted_update = None
        if own.shape[0] == 0:
            self.report = {"f": 0}
            return own
        self.report = {"f": own.shape[0]}
        return self.poison_updates(benign, own, ctx, defense)

    @abstractmethod
    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        """The attack proper, on validated inputs with f >= 1; records its numbers in ``self.report``."""

    def __repr__(self) -> str:
        hidden = ("report", "prediction", "predicted_update", "own_data")
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in hidden and not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class DataAttack(ABC):
    """A data poisoning attack: transforms a malicious client's training data before local training."""

    name: ClassVar[str] = ""

    @abstractmethod
    def poison(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        """The poisoned ``(x, y)``; the given tensors are not modified."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def check_inputs(benign: Tensor, own: Tensor) -> None:
    """Raise ``ValueError`` unless ``benign`` (k, d) and ``own`` (f, d) are finite float matrices
    of the same width; the message names the offending shape or rows."""
    for label, m in (("benign", benign), ("own", own)):
        if not isinstance(m, Tensor) or m.dim() != 2 or not m.is_floating_point():
            raise ValueError(f"{label} updates must be a float tensor of shape (rows, d), got "
                             f"{getattr(m, 'shape', type(m).__name__)}")
    if benign.shape[1] != own.shape[1]:
        raise ValueError(f"benign updates have d={benign.shape[1]} but the attackers' have d={own.shape[1]}")
    for label, m in (("benign", benign), ("own", own)):
        bad = (~finite_rows(m)[0]).nonzero().flatten()
        if bad.numel():
            raise ValueError(f"{label} updates have non-finite rows {bad.tolist()}; an attack needs finite updates")


def reference_updates(benign: Tensor, own: Tensor, knowledge: str) -> Tensor:
    """The benign updates the attackers build on (NDSS'21 §4), by ``knowledge``:

    * ``full`` — the honest clients' updates of the round, as NDSS'21's released code (which the
      HeteroFL paper follows) computes the mean, the perturbation and the distance bounds;
    * ``full_with_own`` — those and the attackers' own honest updates;
    * ``partial`` — only the attackers' own honest updates.
    """
    if knowledge == "partial":
        return own
    if benign.shape[0] == 0:
        raise ValueError(f"{knowledge} knowledge needs the honest clients' updates, but all {own.shape[0]} "
                         "updates of the round are the attackers'")
    return benign if knowledge == "full" else torch.cat([benign, own])


def check_choice(name: str, value: str, allowed: Tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else ``ValueError`` naming both."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def check_positive(**values: float) -> None:
    """``ValueError`` for any value that is not a positive finite number."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{key} must be a positive number, got {v!r}")


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

Attack = Any  # ModelAttack | DataAttack
#: the attacks a configuration can name (``attack_type``)
REGISTRY = Registry("attack")
#: class decorator adding an attack class to :data:`REGISTRY` under ``cls.name``
register = REGISTRY.register


def build_attack(name: str, **params: Any) -> Attack:
    """Instantiate the registered attack ``name`` with keyword ``params``
    (:meth:`~fedml_heterofl.registry.Registry.build`)."""
    return REGISTRY.build(name, **params)
