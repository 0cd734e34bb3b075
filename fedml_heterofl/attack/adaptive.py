"""The adaptive, AGR-tailored attack (HeteroFL paper §VI, Alg. 7; Shejwalkar & Houmansadr, NDSS'21).

The attackers know the aggregation rule and use it as an oracle. With ``ḡ`` the mean of the benign
updates they know (the paper's reference ``g = FedAvg(g_[n])``; a plain mean, as in NDSS'21's code)
and a malicious direction ``Δ̃_1`` (inverse unit vector, std or sign, :func:`perturbation`), they send

* ``g̃_1 = ḡ + γΔ̃_1``,
* ``g̃_k = ḡ + γΔ̃_k`` for ``k ≥ 2``, where ``Δ̃_k`` is ``Δ̃_1`` with the signs of ``⌈μ·d⌉``
  random coordinates flipped (Eq. 8), so the poisoned updates are not identical sybils,

with the largest ``γ`` for which the defense keeps all f of them (Eq. 8's objective), found by the
search of :func:`gamma_search` (Alg. 7 with NDSS'21's first step; it explores ``[0, 2·γ_init]``
and terminates even when no γ succeeds, returning ``γ = 0``, i.e. ``ḡ``).

A tested γ succeeds when all f poisoned updates are kept *and* the aggregate lies farther from ``ḡ``
than at the last success (Eq. 7's ``argmax_γ ‖g − A(·)‖``). For rules that select, the first
condition decides (larger γ, kept, moves the aggregate farther); for rules that keep every update
(Median, FedAvg) the second does, as in NDSS'21's code for Median and Trimmed-mean: γ grows while
the aggregate still moves.

The oracle is the defense the server runs, deciding on exactly the rows the server will see
(``cat(benign, poisoned)`` in the order of :func:`attack_context`) with a private copy of the
round's generator, so it draws what the real call will draw. It is the defense's own
:class:`~fedml_heterofl.defense.oracle.Oracle`: for the package's Gram-based rules each tested γ
costs O(n²) from pieces computed once per round plus the f poisoned models (centered clipping's
iterations too), for Median and trimmed mean a binary search of a few values per coordinate into columns
sorted once, not a whole defense call; Bulyan's aggregate, FedML's rules and a user's rule are computed
on the materialised rows. Its predicted kept set for the
submitted γ is :attr:`prediction`; the server records whether its real decision agrees
(``oracle_agrees``). Against HeteroFL with step 3 the oracle includes the watermark check, so a
successful γ keeps the trigger-loss reduction above λ (the paper's "do not lose performance on D_trg").

Paper-silent choice: ``μ = 0.1`` (a tenth of the coordinates flipped). It makes the f poisoned
updates pairwise cosine ≈ 0.8 instead of 1 — less similar than sybils, so step 1 of HeteroFL
cannot remove them as a block, while each keeps most of the malicious direction.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from fedml_heterofl.attack.base import (
    KNOWLEDGE,
    ModelAttack,
    attack_generator,
    check_choice,
    check_positive,
    reference_updates,
    register,
)
from fedml_heterofl.attack.gamma_search import PERTURBATIONS, gamma_search, perturbation
from fedml_heterofl.defense.base import Defense, RoundContext
from fedml_heterofl.defense.oracle import Oracle, OracleOutcome
from fedml_heterofl.defense.rows import poisoned_rows

#: how the oracle evaluates a tested γ (:class:`~fedml_heterofl.defense.oracle.Oracle`)
ORACLES = ("fast", "plain")


@register
class Adaptive(ModelAttack):
    """AGR-tailored attack against any :class:`Defense` (module doc).

    Args:
        perturbation: ``std`` (default; the paper's Fig. 7), ``unit_vec`` or ``sign``.
        gamma_init: Alg. 7's γ_init; the search covers ``[0, 2·γ_init]`` (NDSS'21's code: 10).
        tau: the search's precision (NDSS'21: 1e-5).
        mu: fraction of coordinates whose sign is flipped for attackers 2..f (Eq. 8).
        knowledge: ``full`` (the mean and perturbation from the round's benign updates, as NDSS'21's
            code; the oracle sees every honest update of the round; default), ``full_with_own`` (the
            attackers' own honest updates join the reference set) or ``partial`` (the attackers' own
            honest updates stand in for the unknown ones, also in the oracle; rules whose n/f
            requirements then fail raise their ``ValueError``).
        oracle: ``fast`` (the defense's :class:`~fedml_heterofl.defense.oracle.Oracle` over pieces
            computed once per round, default) or ``plain`` (the defense called on the materialised
            rows for every tested γ; the same decisions, slower — the reference for tests and
            benchmarks).

    After a call with ``full``/``full_with_own`` knowledge, :attr:`prediction` is the oracle's kept
    mask for the submitted γ, which the server compares with its real decision (``oracle_agrees``).
    """

    name = "adaptive"

    def __init__(self, *, perturbation: str = "std", gamma_init: float = 10.0, tau: float = 1e-5,
                 mu: float = 0.1, knowledge: str = "full", oracle: str = "fast") -> None:
        super().__init__()
        self.perturbation = check_choice("perturbation", perturbation, PERTURBATIONS)
        check_positive(gamma_init=gamma_init, tau=tau)
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"mu must be a fraction in [0, 1], got {mu!r}")
        self.gamma_init = float(gamma_init)
        self.tau = float(tau)
        self.mu = float(mu)
        self.knowledge = check_choice("knowledge", knowledge, KNOWLEDGE)
        self.oracle = check_choice("oracle", oracle, ORACLES)

    def directions(self, delta: Tensor, f: int, generator: torch.Generator) -> Tensor:
        """``Δ̃_1..Δ̃_f`` (f, d) with this attack's μ (:func:`flipped_copies`)."""
        return flipped_copies(delta, f, self.mu, generator)

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        if defense is None:
            raise ValueError("the adaptive attack needs the server's defense as its oracle; got defense=None")
        f = own.shape[0]
        reference = reference_updates(benign, own, self.knowledge)
        mean = reference.mean(dim=0)
        directions = self.directions(perturbation(reference, self.perturbation), f, attack_generator(ctx)).to(own.dtype)
        if self.knowledge == "partial":  # the oracle sees the attackers' honest updates in place of the unknown ones
            others, octx = own, replace(ctx, client_ids=None, sample_counts=None)
        else:
            others, octx = benign, ctx
        oracle = Oracle(defense, others, mean.to(own.dtype), directions, octx, plain=self.oracle == "plain")
        gamma, calls, success, final = alg7_search(oracle, f, self.gamma_init, self.tau)
        self.prediction = None if self.knowledge == "partial" else final.kept
        self.report.update(gamma=gamma, oracle_calls=calls, success=float(gamma > 0),
                           deviation=success.deviation if success is not None else 0.0,
                           kept_as_sent=float(bool(final.kept[-f:].all())),
                           flipped_coordinates=math.ceil(self.mu * own.shape[1]) if f > 1 else 0)
        return poisoned_rows(mean.to(own.dtype), directions, gamma)


def flipped_copies(delta: Tensor, f: int, mu: float, generator: torch.Generator) -> Tensor:
    """``Δ̃_1..Δ̃_f`` (f, d) of Eq. (8): row 1 is ``delta``, rows ``k ≥ 2`` flip ``⌈μ·d⌉`` random signs of it."""
    d = delta.numel()
    flips = math.ceil(mu * d)
    signs = torch.ones(f, d, dtype=delta.dtype)
    if f > 1 and flips > 0:
        # ⌈μ·d⌉ distinct coordinates per row: the smallest keys of a random matrix
        keys = torch.rand(f - 1, d, generator=generator)
        idx = keys.topk(flips, dim=1, largest=False).indices
        signs[1:].scatter_(1, idx, -1.0)
    return signs.to(delta.device) * delta


def alg7_search(oracle: Oracle, f: int, gamma_init: float, tau: float
                ) -> Tuple[float, int, Optional[OracleOutcome], OracleOutcome]:
    """Alg. 7's γ over ``oracle``'s candidate rounds (module doc): the largest γ that keeps all f
    poisoned rows, each success farther from the base than the last (:func:`gamma_search`).

    Returns ``(γ, oracle calls, the last success's outcome or None, the outcome of the rows as sent)``."""
    last: Dict[str, OracleOutcome] = {}  # the outcome of the last successful γ

    def succeeds(gamma: float) -> bool:
        out = oracle(gamma, stop_if_removed=True)
        if out is None or not bool(out.kept[-f:].all()) or (
                "success" in last and out.deviation <= last["success"].deviation):
            return False
        last["success"] = out
        return True

    gamma, calls = gamma_search(succeeds, gamma_init, tau)
    # the prediction for the rows as sent: the search ends within far less than a float32 ulp of a
    # decision boundary, where the rounding of the poisoned rows can tip the server's decision
    final = last["success"] if "success" in last and oracle.plain else oracle(gamma, rounded=True)
    return gamma, calls, last.get("success"), final
