"""Geometric median by the smoothed Weiszfeld algorithm of RFA (Pillutla, Kakade, Harchaoui, "Robust
Aggregation for Federated Learning", IEEE TSP 2022, Alg. 2 "smoothed Weiszfeld").

The aggregate approximately minimises ``Σ_i α_i ‖z − g_i‖``. Starting from ``z⁰`` (the α-weighted
mean, as RFA), each iteration sets::

    β_i = α_i / max(ν, ‖z − g_i‖),      z ← Σ_i β_i g_i / Σ_i β_i

with RFA's smoothing ν > 0 (no division by zero when z meets an update). It stops after ``max_iter``
iterations or when the objective improves by at most ``ftol`` relative to its value.

Every iterate is a weighted mean ``z = wᵀU`` of the updates, so the distances come from the Gram
matrix: ``‖z − g_i‖² = G_ii − 2 (G w)_i + wᵀ G w`` — O(n²) per iteration after one Gram matrix
(float64), and the rule is a :class:`RowsDefense` (the adaptive attack's oracle costs O(n²) per γ).
The aggregate is ``wᵀU`` with the final weights.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, timed
from fedml_heterofl.defense.rows import Rows

INITS = ("mean", "zero")


def weiszfeld_weights(G: Tensor, alpha: Tensor, *, nu: float, max_iter: int, ftol: float,
                      init: str = "mean") -> Tuple[Tensor, int, float]:
    """Smoothed Weiszfeld on the rows behind the Gram matrix ``G`` (float64, ``(n, n)``) with client
    weights ``alpha`` (summing to 1): returns ``(w, iterations, objective)`` where ``z = wᵀU`` is the
    approximate geometric median and ``objective = Σ α_i ‖z − g_i‖`` (module doc)."""
    diag = G.diagonal()

    def distances(w: Tensor) -> Tensor:
        return (diag - 2 * (G @ w) + w @ G @ w).clamp_min(0).sqrt()

    w = alpha.clone() if init == "mean" else torch.zeros_like(alpha)
    dist = distances(w)
    objective = float(alpha @ dist)
    done = 0
    for done in range(1, max_iter + 1):
        beta = alpha / dist.clamp_min(nu)
        w = beta / beta.sum()
        dist = distances(w)
        previous, objective = objective, float(alpha @ dist)
        if abs(previous - objective) <= ftol * max(objective, torch.finfo(torch.float64).tiny):
            break
    return w, done, objective


@register
class GeoMed(RowsDefense):
    """Geometric median, RFA's smoothed Weiszfeld (Pillutla et al. 2022, Alg. 2; module doc).

    Args:
        nu: RFA's smoothing ν > 0 (default 1e-6, small against update norms: it only matters when
            the median meets an update).
        max_iter: most Weiszfeld iterations, >= 1 (default 100; RFA reports that a few suffice).
        ftol: stop when the objective improves by at most ``ftol`` times its value, >= 0 (default
            1e-10; 0 runs all ``max_iter`` iterations).
        weighted: weight clients by ``ctx.sample_counts`` (α_i = n_i / Σ n_j, RFA's weights) instead of
            equally (default False: an attacker can claim any sample count).
        init: ``"mean"`` (RFA: start at the α-weighted mean, default) or ``"zero"`` (start at the zero
            update, as ByzFL's ``GeometricMedian``).

    Every update is kept; ``weights`` are the final Weiszfeld weights (``scores["weiszfeld"]``).
    Robust while fewer than half of the updates are malicious (breakdown point 1/2).
    """

    name = "geomed"
    honest_majority = True
    min_updates = 1

    def __init__(self, *, nu: float = 1e-6, max_iter: int = 100, ftol: float = 1e-10, weighted: bool = False,
                 init: str = "mean") -> None:
        for key, value, low in (("nu", nu, 0.0), ("ftol", ftol, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (key == "nu" and value == 0):
                raise ValueError(f"{key} must be a finite number {'> 0' if key == 'nu' else '>= 0'}, got {value!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
        if not isinstance(weighted, bool):
            raise ValueError(f"weighted must be a bool (True or False), got {weighted!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.nu, self.max_iter, self.ftol = float(nu), max_iter, float(ftol)
        self.weighted, self.init = weighted, init

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("sample_counts",) if self.weighted else ()

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        alpha = torch.full((n,), 1.0 / n, dtype=torch.float64)
        if self.weighted and ctx.sample_counts is not None:
            counts = torch.as_tensor(ctx.sample_counts).reshape(-1).to(torch.float64).cpu()
            if counts.numel() != n or not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()) \
                    or float(counts.sum()) <= 0:
                raise ValueError(f"sample_counts must be {n} finite numbers >= 0, not all 0; got {counts.tolist()}")
            alpha = counts / counts.sum()
        diagnostics: Dict[str, object] = {"nu": self.nu}
        with timed(diagnostics, "gram"):
            G = rows.gram().cpu()
        with timed(diagnostics, "weiszfeld"):
            w, iterations, objective = weiszfeld_weights(G, alpha, nu=self.nu, max_iter=self.max_iter,
                                                         ftol=self.ftol, init=self.init)
        diagnostics.update(iterations=iterations, objective=objective)
        return Selection(torch.ones(n, dtype=torch.bool), {}, {"weiszfeld": w.float()}, diagnostics, w.float())
