"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018, Def. 2).

For every coordinate k the ``f`` largest and the ``f`` smallest of ``g_1k, ..., g_nk`` are removed and
the remaining ``n − 2f`` values averaged::

    Δ_k = 1/(n − 2f) · Σ_{j=f+1}^{n−f} g_(j)k        (g_(1)k ≤ ... ≤ g_(n)k sorted)

Yin et al. trim a fraction β of each end; we take the count ``f`` (β = f/n), as ByzFL's ``TrMean`` and
our other rules do, so ``defense_params`` need not change with n. (FedML 0.9.6's ``trimmed_mean`` is a
different rule: it sorts whole *clients by sample count* and drops both ends, see README.)
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, Selection, register, require_f, timed
from fedml_heterofl.defense.columns import ColumnsDefense, MergedColumns


def trimmed_mean(updates: Tensor, f: int, chunk: int = 1 << 15) -> Tensor:
    """Coordinate-wise mean of ``updates`` ``(n, d)`` without the ``f`` largest and ``f`` smallest
    values of each coordinate -> ``(d,)``.

    Over blocks of ``chunk`` columns (bounds the temporaries), each block is transposed to
    ``(chunk, n)``, sorted along the clients and the middle ``n − 2f`` columns averaged. Sorting (not
    ``sum − top-f − bottom-f``) keeps the benign values exact when the trimmed ones are huge (an
    attacker's 1e30 would swamp the benign sum even in float64)."""
    n, d = updates.shape
    if not 0 <= 2 * f < n:
        raise ValueError(f"trimmed mean needs 0 <= 2f < n; got n={n} updates and f={f}")
    if f == 0:
        return updates.mean(dim=0)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for start in range(0, d, chunk):
        block = updates[:, start:start + chunk].T.sort(dim=1).values
        out[start:start + chunk] = block[:, f:n - f].mean(dim=1)
    return out


@register
class TrimmedMean(ColumnsDefense):
    """Coordinate-wise trimmed mean (Yin et al. ICML 2018, Def. 2; module doc).

    Args:
        f: values trimmed at each end of every coordinate (an int >= 0; the run's attacker count by
            default). A call needs ``n > 2f`` updates; the error names both numbers.

    Every update is "kept" (each contributes to the coordinates where it is not trimmed); ``weights``
    is ``None`` (not a weighted sum) and :meth:`combine` computes the trimmed mean. ``f = 0`` is the
    plain mean. :meth:`combine_columns` gives the same mean from merged sorted columns (the adaptive
    attacks' oracle), its sums in float64: it equals :meth:`combine`'s float32 mean to a few ulps, not
    bit for bit (``exact_columns`` false).
    """

    name = "trimmed_mean"
    exact_columns = False
    honest_majority = True
    min_updates = 1

    def __init__(self, *, f: int) -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be an int >= 0 (values trimmed at each end), got {f!r}")
        self.f = f

    def select(self, updates: Tensor, ctx: RoundContext) -> Selection:
        n = updates.shape[0]
        self._require(n)
        return Selection(torch.ones(n, dtype=torch.bool), {}, {}, {"n": n, "f": self.f}, None)

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        diagnostics: Dict[str, object] = selection.diagnostics
        with timed(diagnostics, "trimmed_mean"):
            return trimmed_mean(updates, self.f)

    def combine_columns(self, columns: MergedColumns) -> Tensor:
        """The trimmed mean from merged columns: the float64 sum of each coordinate's ranks ``f..n − f − 1``
        over ``n − 2f`` (:meth:`MergedColumns.rank_sum`)."""
        n = columns.n
        self._require(n)
        return (columns.rank_sum(self.f, n - self.f) / (n - 2 * self.f)).to(columns.values.dtype)

    def _require(self, n: int) -> None:
        require_f("trimmed mean", n, self.f, min_n=2 * self.f + 1, relation="n > 2f")
