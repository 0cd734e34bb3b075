"""Coordinate-wise rules (order statistics of each coordinate) on the adaptive attacks' candidate rounds,
without sorting the n rows again for every scale γ.

The attacks' poisoned rows are ``b + γ_jΔ_j`` (:func:`~fedml_heterofl.defense.rows.poisoned_rows`), and
their directions are copies of one vector with some coordinates' signs flipped (Alg. 7's Eq. (8)
copies; IPM's and ALIE's identical rows): ``Δ_jc = ±|Δ_c|``. So in each coordinate the f poisoned
values take at most two values per distinct scale (``b_c ± γ|Δ_c|``) plus ``b_c`` for scale 0, each
with a multiplicity. A coordinate's order statistics over ``known ∪ poisoned`` then follow from the
known rows' values sorted once per round and a binary search of those few values into them
(:class:`MergedColumns`): O(d · log k) per γ instead of sorting d columns of n values. A sum over a
span of ranks (the trimmed mean's middle) is the extra values inside the span plus the known values of a
span of known ranks, whose fixed part is summed once per round (:meth:`SortedColumns.span_sum`) and
whose two ends, at most as wide as the extra copies, are differences of prefix sums also computed once
a round (:meth:`SortedColumns.window_prefix`).

:class:`ColumnsDefense` is a rule whose aggregate is computed from such columns
(:class:`~fedml_heterofl.defense.median.Median`, :class:`~fedml_heterofl.defense.trimmed_mean.TrimmedMean`);
:class:`~fedml_heterofl.defense.oracle.Oracle` uses :class:`SignedCandidates` for it when the directions
have this form.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from fedml_heterofl.defense.base import Defense
from fedml_heterofl.defense.rows import Gamma


class SortedColumns:
    """The known rows' coordinates sorted once a round (``values`` ``(d, k)``, :func:`sorted_columns`), and
    float64 sums over their ranks, each computed once: of a fixed span (:meth:`span_sum`) and the prefix
    sums inside a window of ranks (:meth:`window_prefix`)."""

    def __init__(self, values: Tensor) -> None:
        self.values = values
        self._spans: Dict[Tuple[int, int], Tensor] = {}
        self._windows: Dict[Tuple[int, int], Tensor] = {}

    def window_prefix(self, first: int, last: int, chunk: int = 1 << 16) -> Tensor:
        """``(d, last − first + 1)`` float64: column ``i`` is every coordinate's sum of its known values of
        ranks ``first..first + i − 1``."""
        if (first, last) not in self._windows:
            d = self.values.shape[0]
            out = torch.zeros(d, last - first + 1, dtype=torch.float64, device=self.values.device)
            for start in range(0, d, chunk):
                torch.cumsum(self.values[start:start + chunk, first:last].double(), dim=1, out=out[start:start + chunk, 1:])
            self._windows[(first, last)] = out
        return self._windows[(first, last)]

    def span_sum(self, start: int, stop: int, chunk: int = 1 << 16) -> Tensor:
        """``(d,)`` float64: every coordinate's sum of its known values of ranks ``start..stop − 1``."""
        if (start, stop) not in self._spans:
            d = self.values.shape[0]
            total = torch.empty(d, dtype=torch.float64, device=self.values.device)
            for first in range(0, d, chunk):  # over blocks of coordinates: no float64 copy of the whole span
                total[first:first + chunk] = self.values[first:first + chunk, start:stop].double().sum(dim=1)
            self._spans[(start, stop)] = total
        return self._spans[(start, stop)]


class MergedColumns:
    """Every coordinate's values ``known ∪ extra`` as one sorted column, without building it.

    Args:
        known: ``(d, k)``, each coordinate's known values sorted ascending (or their :class:`SortedColumns`,
            shared between candidate rounds).
        values: ``(d, m)`` the extra values of each coordinate, sorted ascending along dim 1.
        counts: ``(d, m)`` their multiplicities (integers ≥ 0).

    The extra value ``i`` of a coordinate goes before the known values equal to it: its copies take the
    merged ranks ``start_i, ..., start_i + counts_i − 1`` with ``start_i = #{known < v_i} + Σ_{i'<i}
    counts_i'``; the known value ``j`` has rank ``j`` plus the copies before it. Ties do not change a
    rank's value.
    """

    def __init__(self, known: Union[Tensor, SortedColumns], values: Tensor, counts: Tensor) -> None:
        self.known = known if isinstance(known, SortedColumns) else SortedColumns(known)
        self.known_sorted, self.values, self.counts = self.known.values, values, counts
        below = torch.searchsorted(self.known_sorted, values.contiguous())  # (d, m): known values < v_i
        self.starts = below + counts.cumsum(dim=1) - counts
        self.extra = int(counts[0].sum())  # copies per coordinate
        self.n = self.known_sorted.shape[1] + self.extra

    def _copies_below(self, rank: int) -> Tensor:
        """``(d,)``: the extra copies whose merged rank is below ``rank``."""
        return (rank - self.starts).clamp(min=0).minimum(self.counts).sum(dim=1)

    def value_at(self, rank: int) -> Tensor:
        """``(d,)``: every coordinate's value of merged rank ``rank`` (0-based; the ``rank + 1``-th smallest)."""
        if not 0 <= rank < self.n:
            raise ValueError(f"rank {rank} is outside the {self.n} values of each coordinate")
        inside = (self.starts <= rank) & (rank < self.starts + self.counts)  # (d, m): at most one per row
        extra = (self.values * inside).sum(dim=1)  # the covering extra value (0 where none covers)
        known = self.known_sorted.gather(1, (rank - self._copies_below(rank)).clamp(max=self.known_sorted.shape[1] - 1)
                                         .unsqueeze(1)).squeeze(1)
        return torch.where(inside.any(dim=1), extra, known)

    def rank_sum(self, start: int, stop: int) -> Tensor:
        """``(d,)`` float64: every coordinate's sum of its merged values of ranks ``start..stop − 1``.

        The extra copies inside the span, plus the known values of ranks ``lo..hi − 1`` with ``lo = start −
        (copies below start)``, ``hi = stop − (copies below stop)``: ``lo`` lies in ``[start − m, start]`` and
        ``hi`` in ``[stop − m, stop]`` for the m copies, so the known span between those ends is one
        :meth:`SortedColumns.span_sum` and only the ends are summed here."""
        if not 0 <= start <= stop <= self.n:
            raise ValueError(f"ranks {start}..{stop} are not a span of the {self.n} values of each coordinate")
        inside = ((self.starts + self.counts).clamp(max=stop) - self.starts.clamp(min=start)).clamp(min=0)
        total = (self.values.double() * inside).sum(dim=1)
        lo, hi = start - self._copies_below(start), stop - self._copies_below(stop)
        k = self.known_sorted.shape[1]
        lo_range = (max(0, start - self.extra), min(start, k))  # where lo can be
        hi_range = (max(0, stop - self.extra), min(stop, k))
        if lo_range[1] <= hi_range[0]:  # a fixed span between the two ends
            return (total + self.known.span_sum(lo_range[1], hi_range[0])
                    + self._known_between(lo, hi, *lo_range) + self._known_between(lo, hi, *hi_range))
        return total + self._known_between(lo, hi, lo_range[0], hi_range[1])

    def _known_between(self, lo: Tensor, hi: Tensor, first: int, last: int) -> Tensor:
        """``(d,)`` float64: the sum of the known values of ranks ``j`` in ``first..last − 1`` with ``lo ≤ j < hi``
        (a difference of two of the window's prefix sums)."""
        prefix = self.known.window_prefix(first, last)
        a = (lo.clamp(first, last) - first).unsqueeze(1)
        b = (hi.clamp(first, last) - first).unsqueeze(1).maximum(a)
        return (prefix.gather(1, b) - prefix.gather(1, a)).squeeze(1)


class ColumnsDefense(Defense):
    """A rule whose aggregate is, coordinate by coordinate, a function of the column's sorted values and
    that keeps every row (Median, trimmed mean): :meth:`combine_columns` gives the aggregate from
    :class:`MergedColumns`, so the adaptive attacks' oracle need not sort the candidate rounds.
    :attr:`exact_columns`: whether that aggregate is :meth:`combine`'s bit for bit (else the oracle asks
    :meth:`combine` for the aggregate the attack submits, so that it predicts the server's exactly)."""

    exact_columns: ClassVar[bool] = True

    @abstractmethod
    def combine_columns(self, columns: MergedColumns) -> Tensor:
        """The aggregate ``(d,)`` of the rows whose coordinates ``columns`` holds: :meth:`combine` on
        those rows (bit for bit where it selects values, as Median; to float rounding where it sums them)."""


class SignedCandidates:
    """The candidate rounds ``cat(known, b + γ_jΔ_j)`` of directions ``Δ_j = ±|Δ|`` (module doc), as
    :class:`MergedColumns` per scale; :meth:`of` returns None for directions of another form.

    The known rows' coordinates are sorted once (``(d, k)``, the size of the rows); a scale costs a few
    O(d) passes and a binary search of ≤ 3 values per coordinate into them.
    """

    def __init__(self, known: SortedColumns, base: Tensor, magnitude: Tensor, negative: Tensor) -> None:
        self.known, self.base = known, base
        self.plus, self.minus = magnitude, -magnitude
        # flipped[j]: how many of rows 0..j-1 have −|Δ_c| at c (a group of consecutive rows is a difference)
        self.flipped = torch.zeros(negative.shape[0] + 1, negative.shape[1], dtype=torch.int32)
        torch.cumsum(negative, dim=0, dtype=torch.int32, out=self.flipped[1:])

    @classmethod
    def of(cls, known: Tensor, base: Tensor, directions: Tensor,
           known_sorted: Optional[SortedColumns] = None) -> Optional["SignedCandidates"]:
        """The candidates of ``directions`` when each row is ``±|Δ|`` coordinate by coordinate, else None;
        ``known_sorted``: ``known``'s sorted columns when the caller shares them between oracles."""
        magnitude = directions[0].abs()
        if not bool((directions.abs() == magnitude).all()):
            return None
        known_sorted = SortedColumns(sorted_columns(known)) if known_sorted is None else known_sorted
        return cls(known_sorted, base, magnitude, torch.signbit(directions) & (magnitude != 0))

    def columns(self, gamma: Gamma) -> Optional[MergedColumns]:
        """The columns of the candidate round at ``gamma`` (one scale, or one per row as
        :func:`~fedml_heterofl.defense.rows.row_scales` gives); None when a poisoned row would be
        screened out (not finite, or all zero), which the plain call decides."""
        f = self.flipped.shape[0] - 1
        scales = gamma.flatten() if isinstance(gamma, Tensor) else torch.full((f,), float(gamma), dtype=torch.float64)
        values, counts = [], []
        for scale in torch.unique(scales):
            rows = scales == scale
            if float(scale) == 0.0:  # b + 0·Δ_j = b
                if not bool(self.base.any()) or not bool(self.base.isfinite().all()):
                    return None
                values.append(self.base)
                counts.append(torch.full_like(self.base, int(rows.sum()), dtype=torch.long))
                continue
            gamma_j = scale.to(self.base.dtype) if isinstance(gamma, Tensor) else gamma
            up, down = torch.mul(self.plus, gamma_j).add_(self.base), torch.mul(self.minus, gamma_j).add_(self.base)
            finite = bool(up.isfinite().all()) and bool(down.isfinite().all())
            if not finite or not bool(((up != 0) & (down != 0)).any()):  # else no row of this scale is all zero
                return None
            flipped = self._flipped(rows.nonzero().flatten())
            values += [up, down]
            counts += [int(rows.sum()) - flipped, flipped]
        order_values, order = torch.stack(values, dim=1).sort(dim=1)
        return MergedColumns(self.known, order_values, torch.stack(counts, dim=1).gather(1, order))

    def _flipped(self, rows: Tensor) -> Tensor:
        """``(d,)``: how many of ``rows`` (indices, ascending) have −|Δ_c| at each c."""
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == rows.numel():  # consecutive rows, as row_scales gives: one difference
            return (self.flipped[last + 1] - self.flipped[first]).long()
        return (self.flipped[rows + 1] - self.flipped[rows]).sum(dim=0, dtype=torch.long)


def sorted_columns(rows: Tensor, chunk: int = 1 << 16) -> Tensor:
    """``(d, n)``: every coordinate's values of ``rows`` ``(n, d)`` sorted ascending (over blocks of
    ``chunk`` coordinates, bounding the temporaries)."""
    n, d = rows.shape
    out = torch.empty(d, n, dtype=rows.dtype, device=rows.device)
    for start in range(0, d, chunk):
        out[start:start + chunk] = rows[:, start:start + chunk].T.sort(dim=1).values
    return out
