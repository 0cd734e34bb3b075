"""Sign-flipping attack (HeteroFL paper §VII-A, after Li et al. [21]): each attacker sends
``−z·g_i``, its own honest update reversed and scaled.

Default ``z = 10``: with f = 20 of n = 100 clients and similar updates the FedAvg aggregate is
about ``(80 − 20z)/100 · ḡ``, which points uphill for any ``z > 4``; at ``z = 10`` it is
``−1.2·ḡ``, gradient ascent as large as an honest step, and FedAvg's accuracy collapses within a
few rounds, as in the paper's Table III (FedAvg under SF: 0.00).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from fedml_heterofl.attack.base import ModelAttack, check_positive, register
from fedml_heterofl.defense.base import Defense, RoundContext


@register
class SignFlip(ModelAttack):
    """``g̃_i = −z·g_i`` for each attacker's own update ``g_i`` (module doc)."""

    name = "sign_flip"

    def __init__(self, *, z: float = 10.0) -> None:
        super().__init__()
        check_positive(z=z)
        self.z = float(z)

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        self.report["z"] = self.z
        return -self.z * own
