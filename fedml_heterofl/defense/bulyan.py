"""Bulyan on Krum (El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
Byzantium", ICML 2018, §4, Alg. 1).

1. Selection: θ = n − 2f updates are chosen by Krum applied recursively — pick the update with the
   lowest Krum score among the remaining ones, move it to the selection set, repeat θ times
   (:func:`~fedml_heterofl.defense.multikrum.iterative_krum`, distances from the float64 Gram matrix).
2. Aggregation: for every coordinate k, the β = θ − 2f values of the selected updates closest to
   their median are averaged::

       Δ_k = 1/β · Σ_{i ∈ M_k} g_ik,   M_k = the β indices i ∈ S with the smallest |g_ik − med_{j∈S} g_jk|

Requires n ≥ 4f + 3 (the paper's condition), checked at call time. Paper-silent choices: the median of
an even θ is the mean of the two middle values (as our Median rule); a tie in distance to the median
(values symmetric about it) goes to the smaller value, so the result depends on the multiset of values
only (permuting clients cannot change it); Krum's neighbour count on a remaining set of r updates is
``r − f − 2``, and ``min(1, r − 1)`` once that drops below 1 (:func:`~fedml_heterofl.defense.multikrum.krum_scores`),
and ties in Krum score go by client id.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, require_f, timed
from fedml_heterofl.defense.gram import sq_distances_from_gram
from fedml_heterofl.defense.multikrum import iterative_krum, krum_scores
from fedml_heterofl.defense.rows import Rows


def closest_to_median_mean(selected: Tensor, beta: int, chunk: int = 1 << 15) -> Tensor:
    """Per coordinate of ``selected`` ``(θ, d)``, the mean of the ``beta`` values closest to the
    coordinate's median (Bulyan's step 2; ties in distance go to the smaller value) -> ``(d,)``.

    Over blocks of ``chunk`` columns: sort each coordinate's values, take the median from the sorted
    values, then a stable sort of the distances (so equal distances keep the ascending value order)
    and the mean of the first ``beta``."""
    theta, d = selected.shape
    if not 1 <= beta <= theta:
        raise ValueError(f"beta must be in [1, θ={theta}], got {beta}")
    out = torch.empty(d, dtype=selected.dtype, device=selected.device)
    half = theta // 2
    for start in range(0, d, chunk):
        values = selected[:, start:start + chunk].T.sort(dim=1).values  # (c, θ) ascending
        if theta % 2:
            med = values[:, half]
        else:
            med = ((values[:, half - 1].double() + values[:, half].double()) / 2).to(values.dtype)
        nearest = (values - med[:, None]).abs().sort(dim=1, stable=True).indices[:, :beta]
        out[start:start + chunk] = values.gather(1, nearest).mean(dim=1)
    return out


@register
class Bulyan(RowsDefense):
    """Bulyan on Krum (El Mhamdi et al. ICML 2018, Alg. 1; module doc).

    Args:
        f: assumed number of attackers (an int >= 0; the run's attacker count by default). A call
            needs ``n >= 4f + 3`` updates; the error names both numbers.

    The θ = n − 2f selected updates are ``kept`` (the others are reported under
    ``removed_by["bulyan"]``, the first pass's Krum scores under ``scores["krum"]``); ``weights`` is
    ``None`` and :meth:`combine` computes step 2 on the kept rows. With ``f = 0`` every update is
    selected and the aggregate is the mean.
    """

    name = "bulyan"
    honest_majority = True
    min_updates = 1

    def __init__(self, *, f: int) -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be an int >= 0 (assumed attackers), got {f!r}")
        self.f = f

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n, f = rows.n, self.f
        require_f("Bulyan", n, f, min_n=4 * f + 3, relation="n >= 4f + 3")
        theta = n - 2 * f
        diagnostics: Dict[str, object] = {"f": f, "theta": theta, "beta": theta - 2 * f}
        with timed(diagnostics, "distances"):
            D = sq_distances_from_gram(rows.gram()).cpu()
        with timed(diagnostics, "selection"):
            first = krum_scores(D, f)
            kept = iterative_krum(D, f, theta, ctx.ids(n), first)
        return Selection(kept, {"bulyan": (~kept).nonzero().flatten()}, {"krum": first.float()}, diagnostics, None)

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        with timed(selection.diagnostics, "aggregation"):
            selected = updates[selection.kept.to(updates.device)]
            return closest_to_median_mean(selected, selected.shape[0] - 2 * self.f)
