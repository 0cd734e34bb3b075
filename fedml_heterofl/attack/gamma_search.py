"""The malicious directions and the scale search of Shejwalkar and Houmansadr (NDSS'21), shared by
Min-Max, Min-Sum, ALIE, IPM and the adaptive attack of Lu, Hu et al. (IEEE TIFS 2024, §VI-A, Alg. 7).

* :func:`perturbation` — the direction ``Δ̃`` (inverse unit vector, standard deviation or sign),
  finite for finite updates; :func:`mean_rows` — the mean ``ḡ`` of the reference updates, finite
  where float32 sums overflow.
* :func:`gamma_search` — NDSS'21's search for the largest scale ``γ`` that passes a test.
* :class:`ConstrainedMeanAttack` — the Min-Max / Min-Sum template ``ḡ + γΔ`` under a distance
  constraint, tested for each γ from a :class:`DistanceProfile` in O(k) (no pass over the updates).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from fedml_heterofl.attack.base import KNOWLEDGE, ModelAttack, check_choice, check_positive, reference_updates
from fedml_heterofl.defense.base import Defense, RoundContext
from fedml_heterofl.defense.gram import sq_distances_from_gram
from fedml_heterofl.defense.rows import gram_matrix

PERTURBATIONS = ("unit_vec", "std", "sign")


def _column_scale(reference: Tensor) -> Tensor:
    """Per coordinate, a power of two (1 to 2**127) at least its largest magnitude over the rows:
    dividing by it is exact and brings the column into [-2, 2], where float32 sums of squares over the
    rows cannot overflow; each coordinate keeps its own scale (the statistics are per coordinate)."""
    exponent = torch.log2(reference.abs().amax(dim=0)).ceil_().clamp_(0, 127)
    return torch.exp2(exponent)


def mean_rows(reference: Tensor) -> Tensor:
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
    """The malicious direction ``Δ̃`` (HeteroFL paper §VI-A; NDSS'21 §4.1) for the reference updates:

    * ``unit_vec``: inverse unit vector ``-ḡ/‖ḡ‖`` of the mean ``ḡ``;
    * ``std``: inverse coordinate-wise standard deviation ``-σ(g)`` (unbiased, as ``torch.std``);
    * ``sign``: inverse sign ``-sign(ḡ)``.

    Finite for finite references: where float32 overflows (entries beyond ~1e19, whose squares pass
    3.4e38, as near a diverged model) the norm is taken in float64 and the deviations on the rows
    scaled by a power of two (exact), then scaled back. A standard deviation beyond float32's range
    (entries near 3.4e38 of both signs) is a ``ValueError`` naming the rows.
    """
    check_choice("perturbation", kind, PERTURBATIONS)
    mean = mean_rows(reference)
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
    HeteroFL paper's Alg. 7 with the step starting at ``γ_init``).

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
    (``[[R Rᵀ, R Δ], [Δᵀ Rᵀ, ‖Δ‖²]]``, accumulated over column blocks), so no tested γ passes over the
    updates. ``pairwise`` are the references' squared distances ``‖g_i − g_j‖²``.
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
        poisoned = mean_rows(reference) + gamma * delta
        if not bool(torch.isfinite(poisoned).all()):
            raise ValueError(f"{self.name}: the poisoned update (mean + {gamma:.3g}·Δ) overflows float32: rows "
                             f"{_largest_rows(reference)} of the known updates (reference_updates: benign, then "
                             f"the attackers' own) hold entries up to {float(reference.abs().amax()):.3g}")
        return poisoned.expand_as(own).clone()
