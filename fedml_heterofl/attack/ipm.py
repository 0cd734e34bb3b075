"""Inner product manipulation (IPM; Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant
SGD by Inner Product Manipulation", UAI 2019 / PMLR 115 2020, §4).

Every attacker sends the negated, scaled mean of the reference updates::

    g̃ = −ε · ḡ

so that the inner product between the aggregate and the true mean turns negative: for the plain mean
of k benign and f such updates, ``(k − fε)/(k + f) · ḡ`` is a descent direction no longer once
``ε > k/f``. Xie et al. study small ε (poisoned updates close to the benign ones, which passes
distance-based rules) and large ones; the default ε = 2 is ByzFL's default (``InnerProductManipulation``).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from fedml_heterofl.attack.base import KNOWLEDGE, ModelAttack, check_choice, check_positive, reference_updates, register
from fedml_heterofl.attack.gamma_search import mean_rows
from fedml_heterofl.defense.base import Defense, RoundContext


@register
class InnerProductManipulation(ModelAttack):
    """IPM: every attacker sends ``−ε · mean(reference)`` (module doc).

    Args:
        epsilon: ε > 0 (default 2.0).
        knowledge: ``full`` (the round's benign updates, default), ``full_with_own`` or ``partial``
            (:func:`~fedml_heterofl.attack.base.reference_updates`).
    """

    name = "ipm"

    def __init__(self, *, epsilon: float = 2.0, knowledge: str = "full") -> None:
        super().__init__()
        check_positive(epsilon=epsilon)
        self.epsilon = float(epsilon)
        self.knowledge = check_choice("knowledge", knowledge, KNOWLEDGE)

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        reference = reference_updates(benign, own, self.knowledge)
        self.report["epsilon"] = self.epsilon
        poisoned = (-self.epsilon * mean_rows(reference)).to(own.dtype)  # the mean as Min-Max's
        return poisoned.expand_as(own).clone()
