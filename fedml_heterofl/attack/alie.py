"""A Little Is Enough (ALIE; Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
Distributed Learning", NeurIPS 2019, §4, Alg. 3).

Every attacker sends the coordinate-wise mean of the reference updates shifted by ``z_max`` standard
deviations::

    g̃_k = μ_k + sign · z_max · σ_k

with ``z_max`` from the round's n workers and f attackers as in the paper: the attackers need
``s = ⌊n/2 + 1⌋ − f`` benign workers "on their side" for a majority, and ``z_max = Φ⁻¹((n − s)/n)``, the
largest shift that still leaves that many benign values farther from the mean (Φ the standard normal
CDF). ``n`` is the number of updates in the round (benign + attackers), f the number of attackers.

Paper-silent or convention choices: σ is the unbiased standard deviation over the reference updates
(as ``torch.std`` and ByzFL's code); the direction of the shift is a convention (the attack moves
every coordinate by ``z·σ_k`` one way): ``sign=-1`` (default) sends ``μ − zσ``, ``sign=+1`` ``μ + zσ``
(ByzFL's ``ALittleIsEnough``). ``z`` can be fixed instead of derived (ByzFL's ``tau``).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Optional

from torch import Tensor

from fedml_heterofl.attack.base import KNOWLEDGE, ModelAttack, check_choice, reference_updates, register
from fedml_heterofl.attack.gamma_search import mean_rows, perturbation
from fedml_heterofl.defense.base import Defense, RoundContext


def z_max(n: int, f: int) -> float:
    """Baruch et al.'s ``z_max = Φ⁻¹((n − s)/n)`` with ``s = ⌊n/2 + 1⌋ − f`` (module doc).

    Raises ``ValueError`` when ``(n − s)/n`` is not below 1 (then f ≥ ⌊n/2 + 1⌋: the attackers are a
    majority and the formula gives an infinite shift)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(f, bool) or not isinstance(f, int) \
            or not 0 <= f <= n:
        raise ValueError(f"z_max needs integers n >= 1 and 0 <= f <= n, got n={n!r}, f={f!r}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if not 0 < p < 1:
        raise ValueError(f"ALIE's z_max = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − f is infinite for n={n}, f={f} "
                         f"((n − s)/n = {p:g}); it needs f < ⌊n/2 + 1⌋, or pass z")
    return NormalDist().inv_cdf(p)


@register
class ALittleIsEnough(ModelAttack):
    """ALIE: every attacker sends ``μ + sign·z·σ`` of the reference updates (module doc).

    Args:
        z: the shift in standard deviations; ``None`` (default): ``z_max(n, f)`` of the round.
        sign: -1 (default, ``μ − zσ``) or +1 (``μ + zσ``).
        knowledge: ``full`` (the round's benign updates, default), ``full_with_own`` or ``partial``
            (:func:`~fedml_heterofl.attack.base.reference_updates`); σ needs at least 2 of them.
    """

    name = "alie"

    def __init__(self, *, z: Optional[float] = None, sign: int = -1, knowledge: str = "full") -> None:
        super().__init__()
        if z is not None and (isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z)):
            raise ValueError(f"z must be a finite number or None (z_max from n and f), got {z!r}")
        if sign not in (-1, 1) or isinstance(sign, bool):
            raise ValueError(f"sign must be -1 or +1, got {sign!r}")
        self.z = None if z is None else float(z)
        self.sign = int(sign)
        self.knowledge = check_choice("knowledge", knowledge, KNOWLEDGE)

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        reference = reference_updates(benign, own, self.knowledge)
        if reference.shape[0] < 2:
            raise ValueError(f"ALIE needs at least 2 reference updates for a standard deviation, got "
                             f"{reference.shape[0]} ({self.knowledge} knowledge)")
        n, f = benign.shape[0] + own.shape[0], own.shape[0]
        z = z_max(n, f) if self.z is None else self.z
        # μ and σ as Min-Max's (float32, finite for finite references: gamma_search.py's mean_rows, perturbation)
        sigma = -perturbation(reference, "std")
        poisoned = (mean_rows(reference) + (self.sign * z) * sigma).to(own.dtype)
        self.report.update(z=z, sign=float(self.sign))
        return poisoned.expand_as(own).clone()
