"""Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
Optimization", ICML 2021, §4, eq. (CC)).

Starting from a centre ``v₀``, L iterations of::

    v_{l+1} = v_l + 1/n · Σ_i (g_i − v_l) · min(1, τ / ‖g_i − v_l‖)

each update's pull on the centre is clipped to length τ, so no update moves the aggregate by more
than τ/n per iteration (bounded influence). The aggregate is ``v_L``.

Paper-silent choices (documented, configurable):

* **Centre** (``center``): Karimireddy et al. centre at the previous round's aggregate (their
  momentum ``v_{t−1}``); in our rounds of deltas that is the previous round's aggregated update,
  ``center="previous"`` (default). The rule keeps the aggregates it returned per round index and
  centres round t at round t−1's; where there is none (the first round, or the first round after a
  resumed run, whose previous aggregate died with the process) it centres at 0 and logs it — so a
  resumed run is not bit-for-bit the uninterrupted one; ``center="zero"`` is stateless. Calls for the
  same round (the adaptive attack's oracle, then the server) all centre at round t−1's aggregate, and
  the last call of round t (the server's) is what round t+1 centres at.
* **τ** (``tau``): the paper sets it from its analysis (with momentum); FL updates differ in scale by
  orders of magnitude between models and learning rates, so the default ``tau=None`` takes, in every
  iteration, the median of the distances ``‖g_i − v_l‖`` (at least half of the updates are never
  clipped); a number is an absolute radius.

Every ``v_l`` is ``β_l v₀ + Σ_i a_li g_i`` (``a₀ = 0``, ``β₀ = 1``; each iteration multiplies both by
``1 − Σ_i s_i/n`` and adds ``s_i/n`` to ``a_i``, ``s_i`` the clipping factors), and its distances to the
updates follow from the Gram matrix and the dot products ``⟨g_i, v₀⟩``: the adaptive attacks' oracle
computes the aggregate's coefficients that way (:meth:`CenteredClipping.affine_aggregate`), without a
pass over d per candidate round.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Set, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, timed
from fedml_heterofl.defense.rows import Rows, Shift, sq_norms64

log = logging.getLogger(__name__)

CENTERS = ("previous", "zero")


def centered_clip(updates: Tensor, center: Tensor, tau: Optional[float], iterations: int,
                  chunk: int = 1 << 15) -> Tensor:
    """``v_L`` of centered clipping from ``v₀ = center`` (module doc); ``tau=None``: the median distance
    of each iteration. Differences ``g_i − v`` in float64 (an update near the centre must not lose its
    direction), formed over blocks of ``chunk`` columns: no float64 copy of the updates."""
    n, d = updates.shape
    v = center.to(torch.float64)
    for _ in range(iterations):
        sq = torch.zeros(n, dtype=torch.float64, device=updates.device)
        for start in range(0, d, chunk):
            sq += (updates[:, start:start + chunk].double() - v[start:start + chunk]).square().sum(dim=1)
        scale = clipping_factors(sq.sqrt(), tau)
        step = torch.empty_like(v)
        for start in range(0, d, chunk):
            step[start:start + chunk] = scale @ (updates[:, start:start + chunk].double() - v[start:start + chunk])
        v = v + step / n
    return v.to(updates.dtype)


def clipping_factors(dist: Tensor, tau: Optional[float]) -> Tensor:
    """``min(1, τ/‖g_i − v‖)`` for the distances ``dist`` (float64); ``tau=None``: their median."""
    radius = float(dist.median()) if tau is None else tau
    return torch.where(dist > radius, radius / dist.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(dist))


@register
class CenteredClipping(RowsDefense):
    """Centered clipping (Karimireddy et al. ICML 2021; module doc).

    Args:
        tau: clipping radius τ > 0, or ``None`` (default): each iteration's median distance.
        iterations: L >= 1 (default 3; the paper's analysis uses one iteration per step with
            momentum, and more iterations bring ``v`` closer to a robust centre without it).
        center: ``"previous"`` (default, the previous round's aggregate) or ``"zero"``.

    Every update is kept (each pulls the centre by at most τ/n); ``weights`` is ``None`` and
    :meth:`combine` runs the iterations on the rows. :meth:`affine_aggregate` runs them on the Gram
    matrix (module doc) for the adaptive attacks' oracle, and never moves the state.
    """

    name = "centered_clipping"
    honest_majority = True
    min_updates = 1

    def __init__(self, *, tau: Optional[float] = None, iterations: int = 3, center: str = "previous") -> None:
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                or not math.isfinite(tau) or tau <= 0):
            raise ValueError(f"tau must be a finite number > 0 or None (the median distance), got {tau!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        self.tau = None if tau is None else float(tau)
        self.iterations = iterations
        self.center = center
        #: round index -> the aggregate the last call of that round returned (the last two rounds)
        self._aggregates: Dict[int, Tensor] = {}
        self._told: Set[int] = set()  # the rounds whose zero centre was logged

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        return Selection(torch.ones(n, dtype=torch.bool), {}, {}, {"n": n, "center": self.center}, None)

    def previous(self, ctx: RoundContext, d: int) -> Optional[Tensor]:
        """The previous round's aggregate, ``v₀`` of round ``ctx.round_idx`` with ``center="previous"``;
        ``None`` where the centre is 0 (module doc)."""
        if self.center == "previous":
            previous = self._aggregates.get(ctx.round_idx - 1)
            if previous is not None and previous.numel() == d:
                return previous
            if ctx.round_idx not in self._aggregates and ctx.round_idx not in self._told:
                self._told.add(ctx.round_idx)
                log.info("centered clipping: no aggregate of round %d; round %d centres at 0",
                         ctx.round_idx - 1, ctx.round_idx)
        return None

    def centre_for(self, ctx: RoundContext, d: int, like: Tensor) -> Tensor:
        """``v₀`` of round ``ctx.round_idx``: the previous round's aggregate, or zeros (module doc)."""
        previous = self.previous(ctx, d)
        if previous is not None:
            return previous.to(device=like.device, dtype=like.dtype)
        return torch.zeros(d, dtype=like.dtype, device=like.device)

    def affine_aggregate(self, rows: Rows, selection: Selection, ctx: RoundContext) -> Tuple[Tensor, Optional[Shift]]:
        """``v_L = Σ_i a_i g_i + β v₀`` as ``(a, Shift(β, v₀))`` (no shift for a zero centre), the iterations
        run on ``rows``' Gram matrix and dot products with ``v₀`` in float64 (module doc): the
        distances ``‖g_i − v‖² = ‖g_i‖² − 2⟨g_i, v⟩ + ‖v‖²``, the rows' call's radius and clipping."""
        n = rows.n
        G = rows.gram()
        centre = self.previous(ctx, rows.d)
        if centre is None:
            to_centre, centre_sq = torch.zeros(n, dtype=torch.float64), 0.0
        else:
            to_centre, centre_sq = rows.dots(centre), float(sq_norms64(centre[None])[0])
        a, beta = torch.zeros(n, dtype=torch.float64), 1.0
        for _ in range(self.iterations):
            Ga = G @ a
            v_sq = beta ** 2 * centre_sq + 2 * beta * float(a @ to_centre) + float(a @ Ga)
            dist = (G.diagonal() - 2 * (beta * to_centre + Ga) + v_sq).clamp_min(0).sqrt()
            scale = clipping_factors(dist, self.tau)
            keep = 1 - float(scale.sum()) / n
            a, beta = a * keep + scale / n, beta * keep
        return a, (None if centre is None else Shift(beta, centre, centre_sq))

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        with timed(selection.diagnostics, "centered_clipping"):
            v = centered_clip(updates, self.centre_for(ctx, updates.shape[1], updates), self.tau, self.iterations)
        if self.center == "previous":
            self._aggregates[ctx.round_idx] = v.detach().clone()
            for old in [r for r in self._aggregates if r < ctx.round_idx - 1]:
                del self._aggregates[old]
        return v
