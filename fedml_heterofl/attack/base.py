"""Contracts shared by every attack (DESIGN §3, §6) and the pieces Min-Max, Min-Sum and the
adaptive attack have in common.

* :class:`ModelAttack`: ``attack(benign (k, d), own (f, d), ctx, defense=None) -> (f, d)`` poisoned
  updates. ``benign`` are the updates of the round's honest clients, ``own`` the honest updates the f
  attackers computed themselves. ``ctx`` describes the rows of ``cat(benign, own)`` in that order
  (:func:`attack_context`); the attack never consumes ``ctx.generator`` (the defense that runs
  after it draws the same numbers whatever the attack did), it derives its own generator
  (:func:`attack_generator`). After each call ``report`` says what the attack did.
* :class:`DataAttack`: ``poison(x, y) -> (x, y)`` transforms a malicious client's training data.
* Attackers are a fixed set of f client ids for the whole run (:func:`choose_attackers`), not
  re-drawn each round as FedML does, so removal rates and TPR/FPR mean something.
"""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from fedml_heterofl.defense.base import Defense, RoundContext
from fedml_heterofl.defense.gram import sq_distances_from_gram
from fedml_heterofl.defense.rows import finite_rows, gram_matrix
from fedml_heterofl.registry import Registry

log = logging.getLogger(__name__)

#: SeedSequence stream of the attacker draw (client ids are below 2**62; the server uses 2**62)
MALICIOUS_STREAM = 2**62 + 1
#: SeedSequence stream of an attack's own random choices within a round
ATTACK_STREAM = 2**62 + 3
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


def attack_generator(ctx: RoundContext) -> torch.Generator:
    """A generator for an attack's own draws in this round, derived from (not drawn from) the
    round's generator, so the defense that runs after the attack sees the same numbers."""
    seed = np.random.SeedSequence([ctx.generator.initial_seed(), ATTACK_STREAM]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(seed) >> 1)


class ModelAttack(ABC):
    """A local model poisoning attack (DESIGN §3). ``name`` is the registry key."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        #: what the last call did (numbers, or a short name, so it can go into the round's metrics)
        self.report: Dict[str, Any] = {}
        #: the kept mask over ``cat(benign, poisoned)`` that the last call's oracle predicted for the
        #: rows it returned, or ``None`` (no oracle, or one that did not see the real round)
        self.prediction: Optional[Tensor] = None
        #: the aggregate the last call's oracle predicted for the rows it returned, or ``None``
        self.predicted_update: Optional[Tensor] = None

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
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if k not in ("report", "prediction", "predicted_update"))
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
# Perturbations and the γ search of NDSS'21 (Min-Max, Min-Sum, AGR-tailored / HeteroFL Alg. 7)
# ---------------------------------------------------------------------------------------------

PERTURBATIONS = ("unit_vec", "std", "sign")


def _column_scale(reference: Tensor) -> Tensor:
    """Per coordinate, a power of two (1 to 2**127) at least its largest magnitude over the rows:
    dividing by it is exact and brings the column into [-2, 2], where float32 sums of squares over the
    rows cannot overflow; each coordinate keeps its own scale (the statistics are per coordinate)."""
    exponent = torch.log2(reference.abs().amax(dim=0)).ceil_().clamp_(0, 127)
    return torch.exp2(exponent)


def _mean(reference: Tensor) -> Tensor:
    """``ḡ``, the mean of the rows; on the rows scaled by :func:`_column_scale` where the float32 sum
    overflows (finite rows with entries beyond ~1e36)."""
    mean = reference.mean(dim=0)
    if bool(torch.isfinite(mean).all()):
        return mean
    scale = _column_scale(reference)
    return (reference / scale).mean(dim=0).mul_(scale)


def _largest_rows(reference: Tensor) -> List[int]:
    """Rows holding an entry of at least half the largest magnitude (to name them in an error)."""
    peak = reference.abs().amax(dim=1)
    return (peak >= peak.max() / 2).nonzero().flatten().tolist()


def perturbation(reference: Tensor, kind: str) -> Tensor:
    """The malicious direction ``Δ̃`` (paper §VI-A; NDSS'21 §4.1) for the reference updates:

    * ``unit_vec``: inverse unit vector ``-ḡ/‖ḡ‖`` of the mean ``ḡ``;
    * ``std``: inverse coordinate-wise standard deviation ``-σ(g)`` (unbiased, as ``torch.std``);
    * ``sign``: inverse sign ``-sign(ḡ)``.

    Finite for finite references: where float32 overflows (entries beyond ~1e19, whose squares pass
    3.4e38, as near a diverged model) the norm is taken in float64 and the deviations on the rows
    scaled by a power of two (exact), then scaled back. A standard deviation beyond float32's range
    (entries near 3.4e38 of both signs) is a ``ValueError`` naming the rows.
    """
    check_choice("perturbation", kind, PERTURBATIONS)
    mean = _mean(reference)
    if kind == "unit_vec":
        norm = torch.linalg.vector_norm(mean)
        if not 0 < float(norm) < math.inf:  # the squares over- or underflow float32: norm in float64
            return (-mean.double() / torch.linalg.vector_norm(mean, dtype=torch.float64).clamp_min(
                torch.finfo(torch.float64).tiny)).to(mean.dtype)
        return -mean / norm
    if kind == "std":
        k = reference.shape[0]
        if k < 2:
            raise ValueError(f"the 'std' perturbation needs at least 2 known benign updates, got {k}")
        # two passes, in place: ~3x faster than torch.std(dim=0) at d = 1.6M (same unbiased value)
        std = ((reference - mean).square_().sum(dim=0) / (k - 1)).sqrt_()
        if not bool(torch.isfinite(std).all()):
            scale = _column_scale(reference)
            scaled = reference / scale
            std = ((scaled - scaled.mean(dim=0)).square_().sum(dim=0) / (k - 1)).sqrt_().mul_(scale)
            if not bool(torch.isfinite(std).all()):
                raise ValueError(f"the 'std' perturbation exceeds float32's range: rows {_largest_rows(reference)} "
                                 f"of the known updates hold entries up to {float(reference.abs().amax()):.3g}")
        return -std
    return -torch.sign(mean)


#: the scale search's precision relative to its start, where τ would be below float64's resolution of γ
RELATIVE_TAU = 2.0**-40


def gamma_search(succeeds: Callable[[float], bool], gamma_init: float, tau: float) -> Tuple[float, int]:
    """The scale search of NDSS'21 (their code for Min-Max, Min-Sum and the AGR-tailored attacks; the
    paper's Alg. 7 with the step starting at ``γ_init``, DESIGN §6).

    Test ``γ``; on success remember it and move up by half the step, otherwise down; halve the step;
    stop when the candidate is within ``τ`` of the last success. Explores ``[0, 2·γ_init]`` and
    always terminates (after about ``log2(γ_init/τ)`` tests): when nothing succeeds it returns 0.
    Alg. 7 as printed (step ``γ_init/2``) only reaches ``[0.5, 1.5]·γ_init`` and loops forever when
    nothing there succeeds. Where ``τ`` is below float64's resolution near ``γ_init`` (a search started
    at 1e15 with τ = 1e-5), the precision is ``RELATIVE_TAU · γ_init`` instead, so the search still ends.

    Returns ``(γ_succ, number of calls of succeeds)``.
    """
    tau = max(float(tau), RELATIVE_TAU * float(gamma_init))
    gamma, step, gamma_succ, calls = float(gamma_init), float(gamma_init), 0.0, 0
    while abs(gamma_succ - gamma) > tau:
        calls += 1
        if succeeds(gamma):
            gamma_succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return gamma_succ, calls


class DistanceProfile:
    """Squared distances between ``m(γ) = ḡ + γΔ`` and each reference update, for any γ, in O(k).

    ``‖ḡ + γΔ − g_i‖² = a_i + 2γ b_i + γ² c`` with ``a_i = ‖ḡ − g_i‖²``, ``b_i = ⟨ḡ − g_i, Δ⟩``,
    ``c = ‖Δ‖²`` — computed once, in float64, from one Gram matrix of the references and ``Δ``
    (``[[R Rᵀ, R Δ], [Δᵀ Rᵀ, ‖Δ‖²]]``, accumulated over column blocks; DESIGN §10: no pass over the
    updates per tested γ). ``pairwise`` are the references' squared distances ``‖g_i − g_j‖²``.
    """

    def __init__(self, reference: Tensor, delta: Tensor) -> None:
        k = reference.shape[0]
        full = gram_matrix(torch.cat([reference, delta.to(reference.dtype)[None]]), torch.float64)
        G, Rd = full[:k, :k], full[:k, k]
        self.pairwise = sq_distances_from_gram(G)
        self.a = (G.diagonal() - 2 * G.mean(dim=1) + G.mean()).clamp_min(0)
        self.b = Rd.mean() - Rd
        self.c = float(full[k, k])

    def distances(self, gamma: float) -> Tensor:
        """``‖m(γ) − g_i‖²`` for every reference ``i`` (float64, shape ``(k,)``)."""
        return self.a + 2 * gamma * self.b + gamma * gamma * self.c


class ConstrainedMeanAttack(ModelAttack):
    """NDSS'21's Min-Max / Min-Sum template: every attacker sends ``m = ḡ + γΔ``, the mean of the
    known benign updates pushed along a malicious direction as far as a distance constraint allows.

    Subclasses define :meth:`constraint` ``(profile, γ) -> (value, bound)``; ``γ`` is the largest
    scale the search finds with ``value <= bound``.

    Args:
        perturbation: ``unit_vec``, ``std`` (NDSS'21's default and ours) or ``sign``.
        gamma_init: the search's starting scale (NDSS'21's code: 10). The search covers
            ``[0, 2·γ_init]``; ``γ_init`` is first doubled while ``2·γ_init`` still satisfies the
            constraint, so the returned γ is within ``τ`` of the largest feasible scale whatever
            the scale of the updates (the constraint is convex in γ and holds at 0, so the feasible
            γ ≥ 0 form one interval).
        tau: the search's precision (NDSS'21: 1e-5; relative at huge starts, :func:`gamma_search`).
        knowledge: ``full`` (the round's benign updates, default), ``full_with_own`` or ``partial``
            (:func:`reference_updates`).

    The poisoned update is finite for finite inputs (:func:`perturbation`; the distance profile is
    float64); one that still overflows float32 (known updates near float32's limit) is a
    ``ValueError`` naming the rows.
    """

    #: most doublings of γ_init (γ ≤ γ_init·2**60; the constraint is a quadratic, so a feasible γ
    #: that large means a zero perturbation)
    MAX_DOUBLINGS = 60

    def __init__(self, *, perturbation: str = "std", gamma_init: float = 10.0, tau: float = 1e-5,
                 knowledge: str = "full") -> None:
        super().__init__()
        self.perturbation = check_choice("perturbation", perturbation, PERTURBATIONS)
        check_positive(gamma_init=gamma_init, tau=tau)
        self.gamma_init = float(gamma_init)
        self.tau = float(tau)
        self.knowledge = check_choice("knowledge", knowledge, KNOWLEDGE)

    @abstractmethod
    def constraint(self, profile: DistanceProfile, gamma: float) -> Tuple[float, float]:
        """``(value, bound)`` of the attack's distance constraint at scale ``gamma``."""

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        reference = reference_updates(benign, own, self.knowledge)
        delta = perturbation(reference, self.perturbation)
        profile = DistanceProfile(reference, delta)

        def feasible(gamma: float) -> bool:
            value, bound = self.constraint(profile, gamma)
            return value <= bound

        start, doublings = self.gamma_init, 0
        while doublings < self.MAX_DOUBLINGS and feasible(2 * start):
            start, doublings = 2 * start, doublings + 1
        gamma, calls = gamma_search(feasible, start, self.tau)
        value, bound = self.constraint(profile, gamma)
        self.report.update(gamma=gamma, gamma_start=start, search_steps=calls + doublings,
                           constraint_value=value, constraint_bound=bound)
        poisoned = _mean(reference) + gamma * delta
        if not bool(torch.isfinite(poisoned).all()):
            raise ValueError(f"{self.name}: the poisoned update (mean + {gamma:.3g}·Δ) overflows float32: rows "
                             f"{_largest_rows(reference)} of the known updates (reference_updates: benign, then "
                             f"the attackers' own) hold entries up to {float(reference.abs().amax()):.3g}")
        return poisoned.expand_as(own).clone()


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

Attack = Any  # ModelAttack | DataAttack
REGISTRY = Registry("attack")
#: class decorator adding an attack class to :data:`REGISTRY` under ``cls.name``
register = REGISTRY.register


def build_attack(name: str, **params: Any) -> Attack:
    """Instantiate the registered attack ``name`` with keyword ``params`` (:meth:`Registry.build`)."""
    return REGISTRY.build(name, **params)
