"""The adaptive attack's oracle: a defense's decisions on the candidate rounds ``cat(known, b + γΔ)``
for any scale γ (Lu, Hu et al., IEEE TIFS 2024, Alg. 7; the AGR-tailored attacks of Shejwalkar and
Houmansadr, NDSS'21).

For a :class:`~fedml_heterofl.defense.base.RowsDefense` — a rule that reads the updates only through
a :class:`~fedml_heterofl.defense.rows.Rows` view — the oracle costs O(n²) per γ plus the f poisoned
models, computed from pieces built once per round (:class:`~fedml_heterofl.defense.rows.AffineBasis`),
not a pass over the d coordinates, where the rule's aggregate is a combination of the rows (and of a
vector it holds: :meth:`~fedml_heterofl.defense.base.Defense.affine_aggregate`). For a
:class:`~fedml_heterofl.defense.columns.ColumnsDefense` (Median, trimmed mean) with directions ``±|Δ|`` it
costs a binary search of a few values per coordinate into the known rows' coordinates, sorted once
(:class:`~fedml_heterofl.defense.columns.SignedCandidates`). Every other rule is called on the
materialised rows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.base import Defense, RoundContext, RowsDefense
from fedml_heterofl.defense.columns import ColumnsDefense, SignedCandidates, SortedColumns, sorted_columns
from fedml_heterofl.defense.rows import AffineBasis, Gamma, Rows, gram_matrix
from fedml_heterofl.defense.screening import screen_rows


@dataclass
class OracleOutcome:
    """What the oracle predicts for one γ: the ``kept`` mask over the candidate rows, and of the
    aggregate ``A`` the two harm measures of Eq. (7)'s search against the base ``b`` — ``deviation``
    ``‖A − b‖`` and ``against`` ``−⟨A, b⟩/‖b‖`` (both 0 when every row is malformed) — and ``update``,
    ``A`` itself, where the call materialised it (the plain call always; the fast oracle when asked)."""

    kept: Tensor
    deviation: float
    against: float = 0.0
    update: Optional[Tensor] = None


class Oracle:
    """A defense's decisions on the candidate rounds ``cat(known, base + γ·directions)`` (module doc):
    ``oracle(γ) -> OracleOutcome``; ``ctx`` describes those rows.

    Each call decides exactly as the rule would on those rows, with a private copy of ``ctx``'s
    generator (:func:`private_generator`: it draws what the server's call will draw and leaves it
    untouched). For a :class:`~fedml_heterofl.defense.base.RowsDefense` the rows are an
    :class:`~fedml_heterofl.defense.rows.AffineRows` view over pieces computed once, and the harm
    measures of a weighted aggregate come from the same pieces. For a
    :class:`~fedml_heterofl.defense.columns.ColumnsDefense` over valid known rows and directions ``±|Δ|``
    the aggregate comes from merged sorted columns (:class:`~fedml_heterofl.defense.columns.SignedCandidates`;
    the plain call for a γ whose poisoned rows would be screened out, and for the aggregate itself where
    :attr:`~fedml_heterofl.defense.columns.ColumnsDefense.exact_columns` is false). Any other rule (a user's rule) is
    called on the materialised rows, as is every rule with ``plain=True`` (the reference
    the fast paths are tested against). ``known_gram`` and ``known_sorted``: :func:`known_pieces`, when
    the caller builds several oracles over the same known rows.
    """

    def __init__(self, defense: Defense, known: Tensor, base: Tensor, directions: Tensor, ctx: RoundContext,
                 *, plain: bool = False, known_gram: Optional[Tensor] = None,
                 known_sorted: Optional[SortedColumns] = None) -> None:
        self.defense, self.ctx, self.base = defense, ctx, base
        self.columns = None
        # known_pieces gives known_sorted only for valid known rows: the check is not made again
        if not plain and isinstance(defense, ColumnsDefense) and (known_sorted is not None or _valid_rows(known)):
            self.columns = SignedCandidates.of(known, base.to(known.dtype), directions.to(known.dtype), known_sorted)
        self.plain = plain or (not isinstance(defense, RowsDefense) and self.columns is None)
        gram_based = not self.plain and self.columns is None
        self.basis = AffineBasis(known, base, directions, known_gram) if gram_based else None
        self._known, self._directions = known, directions.to(known.dtype)
        self._candidate: Optional[Tensor] = None  # the plain call's round, built once when first needed

    def __call__(self, gamma: Gamma, *, stop_if_removed: bool = False, rounded: bool = False,
                 aggregate: bool = False) -> Optional[OracleOutcome]:
        """The outcome at scale ``gamma`` (one γ, or one per poisoned row:
        :func:`~fedml_heterofl.defense.rows.row_scales`); with ``stop_if_removed``, ``None`` instead when
        some poisoned row is certainly removed (screened out, or :meth:`RowsDefense.removes_any
        <fedml_heterofl.defense.base.RowsDefense.removes_any>`), before the full selection — all the
        adaptive attack asks of a γ that fails. ``rounded``: decide on the poisoned rows exactly as they
        will be sent (float32-rounded; :meth:`AffineBasis.rows <fedml_heterofl.defense.rows.AffineBasis.rows>`),
        for the γ the attack submits; the plain call always does. ``aggregate``: the outcome carries the
        aggregate itself (:attr:`OracleOutcome.update`, materialised as the server's call computes it)."""
        if self.columns is not None and (self.defense.exact_columns or not aggregate):
            merged = self.columns.columns(gamma)
            if merged is not None:  # every row kept, the aggregate from the merged columns
                update = self.defense.combine_columns(merged)
                return OracleOutcome(torch.ones(merged.n, dtype=torch.bool), _distance(update, self.base),
                                     _against(update, self.base), update)
        ctx = private_generator(self.ctx)
        if self.plain or self.columns is not None:
            if self._candidate is None:
                self._candidate = torch.cat([self._known, self._directions])
            poisoned = self._candidate[-self._directions.shape[0]:]
            torch.mul(self._directions, gamma, out=poisoned).add_(self.base)  # = poisoned_rows(...)
            result = self.defense(self._candidate, ctx)
            return OracleOutcome(result.kept, _distance(result.update, self.base), _against(result.update, self.base),
                                 result.update)
        rows = self.basis.rows(gamma, rounded)
        if stop_if_removed and self._removes_poisoned(rows):
            return None
        decision = self.defense.decide(rows, ctx)
        kept = torch.zeros(rows.n, dtype=torch.bool)
        if decision.selection is None:
            return OracleOutcome(kept, 0.0, 0.0, torch.zeros_like(self.base) if aggregate else None)
        sel = decision.selection
        kept[decision.index] = sel.kept
        affine = self.defense.affine_aggregate(decision.rows, sel, decision.ctx)
        update = self.defense.combine(decision.rows.materialise(), sel, decision.ctx) \
            if aggregate or affine is None else None
        # the harm measures from the pieces (no pass over d), except for a rule with its own combine whose
        # aggregate is at hand: then those of the aggregate the server computes (float32-rounded)
        if affine is not None and (update is None or type(self.defense).combine is Defense.combine):
            rows = decision.rows
            return OracleOutcome(kept, rows.deviation(*affine), rows.against(*affine), update)
        return OracleOutcome(kept, _distance(update, self.base), _against(update, self.base), update)

    def _removes_poisoned(self, rows: Rows) -> bool:
        index, _ = screen_rows(rows)
        k = self.basis.k
        if int((index >= k).sum()) < self.basis.f:  # a poisoned row is malformed: removed
            return True
        ctx = private_generator(self.ctx if index.numel() == rows.n else self.ctx.subset(index, rows.n))
        return self.defense.removes_any(rows.subset(index), ctx, (index >= k).nonzero().flatten())


def known_pieces(defense: Defense, known: Tensor, *, plain: bool = False
                 ) -> Tuple[Optional[Tensor], Optional[SortedColumns]]:
    """What several :class:`Oracle` s of ``defense`` over the same ``known`` rows share, computed once:
    ``(known_gram, known_sorted)`` — the float64 Gram matrix for a
    :class:`~fedml_heterofl.defense.base.RowsDefense`, the sorted coordinates
    (:class:`~fedml_heterofl.defense.columns.SortedColumns`) for a valid round of a
    :class:`~fedml_heterofl.defense.columns.ColumnsDefense`; ``None`` for what the oracle will not use."""
    if plain:
        return None, None
    gram = gram_matrix(known, torch.float64) if isinstance(defense, RowsDefense) else None
    valid_columns = isinstance(defense, ColumnsDefense) and _valid_rows(known)
    columns = SortedColumns(sorted_columns(known)) if valid_columns else None
    return gram, columns


def _valid_rows(rows: Tensor) -> bool:
    """Whether no row of ``rows`` would be screened out (every entry finite, no row all zero)."""
    return bool(rows.isfinite().all()) and bool(rows.any(dim=1).all())


def private_generator(ctx: RoundContext) -> RoundContext:
    """``ctx`` with a private copy of its generator: a defense called as an oracle draws exactly
    what the real call will draw, and leaves the real call's generator untouched."""
    generator = torch.Generator(device=ctx.generator.device)
    generator.set_state(ctx.generator.get_state())
    return replace(ctx, generator=generator)


def _distance(update: Tensor, base: Tensor) -> float:
    return float(torch.linalg.vector_norm(update.double() - base.double()))


def _against(update: Tensor, base: Tensor) -> float:
    """``−⟨A, b⟩/‖b‖`` in float64 (0 for a zero base)."""
    norm = float(torch.linalg.vector_norm(base.double()))
    return -float(update.double() @ base.double()) / norm if norm > 0 else 0.0
