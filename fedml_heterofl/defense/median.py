"""Coordinate-wise Median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018, Def. 1).

``Δ_k = med{g_1k, ..., g_nk}`` for every coordinate k, with the statistical median: the middle value
for odd n and the mean of the two middle values for even n. (``torch.median`` returns the lower
middle, and ``torch.quantile`` refuses inputs above 2^24 elements, so neither is used.)
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, Selection, register, timed
from fedml_heterofl.defense.columns import ColumnsDefense, MergedColumns


def coordinate_median(updates: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Coordinate-wise statistical median of ``updates`` ``(n, d)`` -> ``(d,)``.

    Over blocks of ``chunk`` columns (bounds the temporary memory), each block is transposed to
    ``(chunk, n)`` and ``topk(⌊n/2⌋ + 1, largest=False, sorted=True)`` gives the middle value(s) in
    its last column(s); the two middle values of an even n are averaged in float64 (no overflow).
    This is 3.5x faster on CPU than ``kthvalue``/``sort`` along dim 0 at n = 100, d = 10⁶.
    """
    n, d = updates.shape
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    k = n // 2 + 1 if n % 2 == 0 else (n + 1) // 2  # rank of the upper (or only) middle value
    for start in range(0, d, chunk):
        block = updates[:, start:start + chunk].T.contiguous()
        vals = block.topk(k, dim=1, largest=False, sorted=True).values
        if n % 2:
            out[start:start + chunk] = vals[:, k - 1]
        else:
            out[start:start + chunk] = ((vals[:, k - 2].double() + vals[:, k - 1].double()) / 2).to(updates.dtype)
    return out


@register
class Median(ColumnsDefense):
    """Coordinate-wise Median (Yin et al. ICML 2018): ``Δ_k = med_i g_ik``.

    No parameters. Every update is "kept" (each may contribute to some coordinates), ``weights`` is
    ``None`` because the aggregate is not a weighted sum, and :meth:`combine` computes the median
    (:meth:`combine_columns` the same from sorted columns, for the adaptive attacks' oracle).
    Robust while fewer than half of the updates are malicious (breakdown point 1/2).
    """

    name = "median"
    honest_majority = True
    min_updates = 1

    def __init__(self) -> None:
        pass

    def select(self, updates: Tensor, ctx: RoundContext) -> Selection:
        n = updates.shape[0]
        return Selection(torch.ones(n, dtype=torch.bool), {}, {}, {"n": n}, None)

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        diagnostics: Dict[str, object] = selection.diagnostics
        with timed(diagnostics, "median"):
            return coordinate_median(updates)

    def combine_columns(self, columns: MergedColumns) -> Tensor:
        """The median from merged columns: the middle rank, or the two middle ranks averaged in float64
        (as :func:`coordinate_median`, so the two agree bit for bit)."""
        n = columns.n
        if n % 2:
            return columns.value_at(n // 2)
        low, high = columns.value_at(n // 2 - 1), columns.value_at(n // 2)
        return ((low.double() + high.double()) / 2).to(low.dtype)
