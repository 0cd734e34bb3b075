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
        n, d = rows.n, rows.d
        missing = [key for key in self.requires if getattr(ctx, key) is None]
        if missing:
            raise ValueError(f"Zeno needs ctx.{', ctx.'.join(missing)}")
        if ctx.global_params.numel() != d:
            raise ValueError(f"global_params has {ctx.global_params.numel()} entries, updates have d={d}")
        if self.b >= n:
            raise ValueError(f"Zeno drops b={self.b} updates and needs b < n; got n={n} updates")
        diagnostics: Dict[str, object] = {"b": self.b, "rho": self.rho}
        with timed(diagnostics, "losses"):
            base = float(ctx.loss_fn(ctx.global_params.reshape(1, -1), ctx.validation_batch).reshape(-1)[0])
            losses = rows.losses(torch.arange(n), ctx.global_params, ctx.loss_fn, ctx.validation_batch, self.chunk)
        score = base - losses - self.rho * rows.sq_norms().cpu()
        # A NaN loss (diverged model) or an overflowing norm makes the worst score, not an unordered one.
        score = torch.nan_to_num(score, nan=-torch.inf)
        # Keep the n - b highest scores: order by -score (ties by id). Non-finite scores are -inf.
        kept = torch.zeros(n, dtype=torch.bool)
        kept[order_by_score(-score.cpu(), ctx.ids(n))[: n - self.b]] = True
        diagnostics["loss_before"] = float(base)
        return Selection(kept, {"zeno": (~kept).nonzero().flatten()}, {"zeno": score.float().cpu()},
                         diagnostics, uniform_weights(kept))
