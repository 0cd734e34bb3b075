"""Min-Sum attack (Shejwalkar & Houmansadr, NDSS'21, §4.3; HeteroFL paper §VII-A).

Every attacker sends ``m = ḡ + γΔ`` with the largest γ such that the sum of squared distances from
the poisoned update to the known benign updates stays within that of a benign update::

    Σ_i ‖m − g_i‖²  ≤  bound_j Σ_i ‖g_j − g_i‖²

``bound`` is a parameter: NDSS'21's paper writes the max over j, its released code uses the min
(a stricter, stealthier attack). We default to the code's ``min``. See
:class:`ConstrainedMeanAttack` for the other parameters and the search.
"""
from __future__ import annotations

from typing import Tuple

from fedml_heterofl.attack.base import check_choice, register
from fedml_heterofl.attack.gamma_search import ConstrainedMeanAttack, DistanceProfile


@register
class MinSum(ConstrainedMeanAttack):
    """Min-Sum: ``Σ_i ‖m − g_i‖² ≤ min_j (or max_j) Σ_i ‖g_j − g_i‖²`` (module doc)."""

    name = "min_sum"

    def __init__(self, *, bound: str = "min", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.bound = check_choice("bound", bound, ("min", "max"))

    def constraint(self, profile: DistanceProfile, gamma: float) -> Tuple[float, float]:
        sums = profile.pairwise.sum(dim=1)
        limit = sums.min() if self.bound == "min" else sums.max()
        return float(profile.distances(gamma).sum()), float(limit)
