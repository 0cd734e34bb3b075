"""Min-Max attack (Shejwalkar & Houmansadr, NDSS'21, §4.3; HeteroFL paper §VII-A).

Every attacker sends ``m = ḡ + γΔ`` with the largest γ such that the poisoned update is no farther
from any known benign update than the two farthest benign updates are from each other::

    max_i ‖m − g_i‖²  ≤  max_{i,j} ‖g_i − g_j‖²

(squared L2 distances, as in NDSS'21's code). See :class:`ConstrainedMeanAttack` for the
parameters and the search.
"""
from __future__ import annotations

from typing import Tuple

from fedml_heterofl.attack.base import register
from fedml_heterofl.attack.gamma_search import ConstrainedMeanAttack, DistanceProfile


@register
class MinMax(ConstrainedMeanAttack):
    """Min-Max: ``max_i ‖m − g_i‖² ≤ max_{i,j} ‖g_i − g_j‖²`` (module doc)."""

    name = "min_max"

    def constraint(self, profile: DistanceProfile, gamma: float) -> Tuple[float, float]:
        return float(profile.distances(gamma).max()), float(profile.pairwise.max())
