"""Zeno (Xie, Koyejo, Gupta, "Zeno: Distributed Stochastic Gradient Descent with Suspicion-based
Fault-tolerance", ICML 2019, Def. 1 and Alg. 1).

Stochastic descendant score of a candidate, evaluated on a server-side validation batch:
``Score(g_i) = L(w_t) - L(w_t + g_i) - ρ‖g_i‖²``. The ``n - b`` highest-scoring updates are averaged.

The paper scores a gradient ``u`` with learning rate γ: ``f_r(x) - f_r(x - γu) - ρ‖u‖²``. Here the
updates are model deltas ``g_i = w_i - w_t`` (``w_t + g_i`` is client i's model), so the step is
the update itself and ρ multiplies ``‖g_i‖²``; the paper's ρ on gradients equals ``ρ·γ²`` here.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, timed, uniform_weights
from fedml_heterofl.defense.multikrum import order_by_score
from fedml_heterofl.defense.rows import Rows


@register
class Zeno(RowsDefense):
    """Zeno: keep the ``n - b`` updates with the highest ``L(w_t) - L(w_t + g_i) - ρ‖g_i‖²``.

    Args:
        b: number of updates dropped each round (required; Zeno's trimming parameter, typically
            the assumed number of attackers f). Must be ``< n`` at call time.
        rho: weight ρ of the norm penalty, default ``5e-4``: small, so that the estimated loss
            descent dominates the score and ρ only penalises updates that are large for the
            descent they bring (the paper leaves ρ a hyper-parameter and uses small values; since
            ``‖g_i‖²`` grows with d and the learning rate, tune it per model).
        chunk: parameter vectors per ``loss_fn`` call (bounds memory at ``chunk`` model copies).

    Reads ``ctx.loss_fn``, ``ctx.validation_batch`` and ``ctx.global_params``. Scores are under
    ``scores["zeno"]``; ties (at :func:`~fedml_heterofl.defense.multikrum.order_by_score`'s
    resolution) are broken by client id. Zeno assumes at least one honest update (not an honest
    majority).
    """

    name = "zeno"
    honest_majority = False
    min_updates = 1

    def __init__(self, *, b: int, rho: float = 5e-4, chunk: int = 128) -> None:
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"b must be an int >= 0, got {b!r}")
        if not (isinstance(rho, (int, float)) and rho >= 0 and rho != float("inf")):
            raise ValueError(f"rho must be a finite float >= 0, got {rho!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
        self.b = b
        self.rho = float(rho)
        self.chunk = chunk

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("loss_fn", "validation_batch", "global_params")

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        self._check(rows, ctx)
        diagnostics: Dict[str, object] = {"b": self.b, "rho": self.rho}
        with timed(diagnostics, "losses"):
            base = self._loss_before(ctx)
            score = self._scores(rows, ctx, torch.arange(n), base, rows.sq_norms().cpu())
        # Keep the n - b highest scores: order by -score (ties by id). Non-finite scores are -inf.
        kept = torch.zeros(n, dtype=torch.bool)
        kept[order_by_score(-score, ctx.ids(n))[: n - self.b]] = True
        diagnostics["loss_before"] = base
        return Selection(kept, {"zeno": (~kept).nonzero().flatten()}, {"zeno": score.float()},
                         diagnostics, uniform_weights(kept))

    def removes_any(self, rows: Rows, ctx: RoundContext, index: Tensor) -> bool:
        """Zeno removes the b lowest scores, so a row of ``index`` that scores below the b-th lowest
        score of the other rows is removed, or another row of ``index`` with a lower score is (the
        oracle's test for a γ that fails). The rows of ``index`` are scored one model at a time,
        stopping at the first such row. A margin of 1e-9 of the largest score seen keeps the ranking's
        ties (:func:`~fedml_heterofl.defense.multikrum.order_by_score`'s resolution) out of the test."""
        others = torch.ones(rows.n, dtype=torch.bool)
        others[index] = False
        if self.b == 0 or int(others.sum()) < self.b:
            return False
        self._check(rows, ctx)
        base, sq_norms = self._loss_before(ctx), rows.sq_norms().cpu()
        other_scores = self._scores(rows, ctx, others.nonzero().flatten(), base, sq_norms)
        bound = float(other_scores.kthvalue(self.b).values)
        finite = other_scores[torch.isfinite(other_scores)]
        seen = float(finite.abs().max()) if finite.numel() else 0.0
        for j in index:
            score = float(self._scores(rows, ctx, j.reshape(1), base, sq_norms)[0])
            if score < bound - 1e-9 * max(seen, abs(score), abs(bound)):
                return True
        return False

    def _check(self, rows: Rows, ctx: RoundContext) -> None:
        missing = [key for key in self.requires if getattr(ctx, key) is None]
        if missing:
            raise ValueError(f"Zeno needs ctx.{', ctx.'.join(missing)}")
        if ctx.global_params.numel() != rows.d:
            raise ValueError(f"global_params has {ctx.global_params.numel()} entries, updates have d={rows.d}")
        if self.b >= rows.n:
            raise ValueError(f"Zeno drops b={self.b} updates and needs b < n; got n={rows.n} updates")

    @staticmethod
    def _loss_before(ctx: RoundContext) -> float:
        """``L(w_t)`` on the validation batch."""
        return float(ctx.loss_fn(ctx.global_params.reshape(1, -1), ctx.validation_batch).reshape(-1)[0])

    def _scores(self, rows: Rows, ctx: RoundContext, idx: Tensor, base: float, sq_norms: Tensor) -> Tensor:
        """``L(w_t) − L(w_t + g_i) − ρ‖g_i‖²`` for rows ``idx`` (float64); a NaN loss (diverged model)
        or an overflowing norm makes the worst score, -inf, not an unordered one."""
        losses = rows.losses(idx, ctx.global_params, ctx.loss_fn, ctx.validation_batch, self.chunk).cpu()
        return torch.nan_to_num(base - losses - self.rho * sq_norms[idx], nan=-torch.inf)
