"""(Multi-)Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017, §4) and the iterative Multi-Krum used by
Shejwalkar & Houmansadr ("Manipulating the Byzantine: Optimizing Model Poisoning Attacks and
Defenses for Federated Learning", NDSS 2021, code ``multi_krum``).

``score_i = Σ_{j ∈ N_i} ‖g_i - g_j‖²`` where ``N_i`` holds the ``n - f - 2`` updates closest to
``g_i`` (``i`` itself excluded). Krum picks the lowest score; Multi-Krum averages the ``m`` lowest.
Distances come from the float64 Gram matrix (near-identical sybil updates would cancel
catastrophically in float32).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from fedml_heterofl.defense.base import (
    RoundContext,
    RowsDefense,
    Selection,
    register,
    require_f,
    timed,
    uniform_weights,
)
from fedml_heterofl.defense.gram import sq_distances_from_gram
from fedml_heterofl.defense.rows import Rows

VARIANTS = ("static", "iterative")
#: relative resolution at which ranked scores are compared (:func:`order_by_score`)
RANK_RESOLUTION = 1e-12


def order_by_score(scores: Tensor, ids: Tensor, resolution: float = RANK_RESOLUTION) -> Tensor:
    """Row indices sorted by ascending ``scores``, ties broken by client id (so permuting the
    clients permutes the outcome).

    Scores are compared at a resolution of ``resolution · max|s|`` (over the finite scores; infinite
    ones keep their place at either end): identical rows, whose scores a matrix product can return a
    few ulps apart, tie and go by client id. Scores are rounded to that grid (the largest score is a
    grid point, so scores next to it tie with it), so two scores closer than the resolution may still
    fall on both sides of a half-way line (probability ~ their distance / the resolution: ~1e-4 for
    float64 ulps)."""
    s = scores.double()
    finite = torch.isfinite(s)
    scale = float(s[finite].abs().max()) if bool(finite.any()) else 0.0
    if scale > 0:
        s = torch.where(finite, torch.round(s / (resolution * scale)), s)
    order = torch.argsort(ids, stable=True)
    return order[torch.argsort(s[order], stable=True)]


def krum_scores(sq_dist: Tensor, f: int, alive: Optional[Tensor] = None) -> Tensor:
    """Krum scores over the rows ``alive`` (mask, default all) of a squared-distance matrix.

    Each alive row sums its ``k = r - f - 2`` smallest distances to the other alive rows
    (``r`` = number alive); when ``r - f - 2 < 1`` (only in late iterative rounds) ``k`` is
    ``min(1, r - 1)``. Rows not alive get ``+inf``.
    """
    n = sq_dist.shape[0]
    alive = torch.ones(n, dtype=torch.bool, device=sq_dist.device) if alive is None else alive
    r = int(alive.sum())
    k = r - f - 2 if r - f - 2 >= 1 else min(1, r - 1)
    scores = torch.full((n,), torch.inf, dtype=sq_dist.dtype, device=sq_dist.device)
    if r == 0:
        return scores
    if k <= 0:
        scores[alive] = 0
        return scores
    D = sq_dist[alive][:, alive].clone()
    D.fill_diagonal_(torch.inf)
    scores[alive] = D.topk(k, dim=1, largest=False).values.sum(dim=1)
    return scores


def iterative_krum(sq_dist: Tensor, f: int, m: int, ids: Tensor, first: Optional[Tensor] = None) -> Tensor:
    """Mask of the ``m`` rows picked by repeated Krum: score the remaining rows (:func:`krum_scores`),
    move the best (ties by client id, :func:`order_by_score`) to the selected set, repeat ``m`` times
    (NDSS'21's iterative Multi-Krum; Bulyan's selection, El Mhamdi et al. 2018, Alg. 1 step 1).
    ``first`` are the scores of the whole set when already computed."""
    n = sq_dist.shape[0]
    kept = torch.zeros(n, dtype=torch.bool)
    alive = torch.ones(n, dtype=torch.bool)
    scores = krum_scores(sq_dist, f) if first is None else first
    for _ in range(m):
        best = int(order_by_score(scores, ids)[0])
        kept[best] = True
        alive[best] = False
        scores = krum_scores(sq_dist, f, alive)
    return kept


@register
class MultiKrum(RowsDefense):
    """Multi-Krum: mean of the ``m`` updates with the lowest Krum scores.

    ``score_i = Σ_{j ∈ N_i} ‖g_i - g_j‖²`` over the ``n - f - 2`` nearest other updates
    (Blanchard et al. 2017, §4); ``Δ = (1/m) Σ_{i ∈ S} g_i``.

    Args:
        f: assumed number of attackers (required; Krum's guarantee needs ``n ≥ 2f + 3``, which
            is checked at call time).
        m: number of updates kept; default ``n - f`` (Blanchard et al.'s Multi-Krum with
            ``m = n - f`` keeps as many updates as there are assumed benign clients).
            ``m = 1`` is Krum.
        variant: ``"static"`` keeps the ``m`` lowest scores of one scoring pass (Blanchard et al.);
            ``"iterative"`` recomputes the scores on the remaining set after every pick and moves
            the best update to the selected set, until ``m`` are selected (Shejwalkar &
            Houmansadr's NDSS'21 ``multi_krum``). Two paper-silent details of the iterative
            variant: (i) neighbours are the ``r - f - 2`` nearest *other* remaining updates (the
            NDSS'21 code counts the zero self-distance among them); (ii) the NDSS'21 code stops
            when ``2f + 2`` updates remain (pass ``m = n - 2f - 2`` to reproduce that); with the
            default ``m = n - f`` the neighbour count falls to ``min(1, r - 1)`` once
            ``r - f - 2 < 1``.

    Ties in score (at a relative resolution of 1e-12, :func:`order_by_score`) are broken by client
    id. Scores are reported under ``scores["krum"]`` (first scoring pass), the removed rows under
    ``removed_by["multikrum"]``.
    """

    name = "multikrum"
    honest_majority = True
    min_updates = 1

    def __init__(self, *, f: int, m: Optional[int] = None, variant: str = "static") -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be an int >= 0, got {f!r}")
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"m must be an int >= 1 or None (n - f), got {m!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.f = f
        self.m = m
        self.variant = variant

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        f = self.f
        require_f("Multi-Krum", n, f, min_n=2 * f + 3, relation="n >= 2f + 3")
        m = n - f if self.m is None else self.m
        if m > n:
            raise ValueError(f"Multi-Krum m must be <= n; got m={m} and n={n} updates")
        ids = ctx.ids(n)
        diagnostics: Dict[str, object] = {"m": m, "f": f, "variant": self.variant}
        with timed(diagnostics, "distances"):
            D = sq_distances_from_gram(rows.gram()).cpu()  # float64 (n, n): select on CPU
        with timed(diagnostics, "selection"):
            first = krum_scores(D, f)
            if self.variant == "static":
                kept = torch.zeros(n, dtype=torch.bool)
                kept[order_by_score(first, ids)[:m]] = True
            else:
                kept = iterative_krum(D, f, m, ids, first)
        return Selection(kept, {"multikrum": (~kept).nonzero().flatten()}, {"krum": first.float()},
                         diagnostics, uniform_weights(kept))
