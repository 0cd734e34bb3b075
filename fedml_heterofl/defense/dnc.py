"""Divide-and-Conquer (DnC; Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, §VI, Alg. 2).

For each of ``niters`` iterations: draw ``b`` random coordinates ``r``, centre the sub-sampled
updates ``U_r`` by their mean ``μ``, take the top right singular vector ``v`` of the centred matrix
and score ``s_i = ((U_r,i - μ) · v)²`` (outlier score along the principal direction); keep the
``n - ⌊c·f⌋`` lowest. The final set is the intersection over iterations; the aggregate is its mean.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, timed, uniform_weights
from fedml_heterofl.defense.multikrum import order_by_score
from fedml_heterofl.defense.rows import Rows


def dnc_scores(sub: Tensor) -> Tensor:
    """DnC outlier scores of sub-sampled updates ``sub`` ``(n, b)``, computed in float64:
    ``((sub_i - μ) · v)²`` with ``v`` the top right singular vector of ``sub - μ`` (exact thin SVD,
    ``torch.linalg.svd(full_matrices=False)``; ``n ≤ b`` is small so the exact SVD is cheap and,
    unlike ``svd_lowrank``, deterministic). The sign of ``v`` does not matter (squared)."""
    centred = sub.to(torch.float64)
    centred = centred - centred.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]) ** 2


@register
class DnC(RowsDefense):
    """Divide-and-Conquer (NDSS'21, Alg. 2).

    Args:
        f: assumed number of attackers (required).
        c: filtering fraction; ``⌊c·f⌋`` updates are removed per iteration (default 1.0, the
            paper's main setting; rounding down, with a 1e-9 tolerance for float products such as
            0.29·100, is paper-silent). Needs ``n - ⌊c·f⌋ ≥ 1``.
        niters: number of random sub-samplings (default 1, the paper's default; with more, an
            update must survive every iteration).
        subsample_dim: ``b``, coordinates per sub-sample (default 10000, as in the paper; ``d`` is
            used when the model is smaller, and then no coordinates are drawn).

    Coordinates are drawn with ``torch.randperm(d, generator=ctx.generator)[:b]``, independent of
    the client order. ``scores["dnc"]`` holds, per update, the maximum over iterations of its score
    (paper-silent; one iteration: the score itself). Ties — scores equal at a relative resolution
    of 1e-12, as identical rows give — are broken by client id
    (:func:`~fedml_heterofl.defense.multikrum.order_by_score`).
    """

    name = "dnc"
    honest_majority = True
    min_updates = 1

    def __init__(self, *, f: int, c: float = 1.0, niters: int = 1, subsample_dim: int = 10000) -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be an int >= 0, got {f!r}")
        if not (isinstance(c, (int, float)) and 0 <= c < float("inf")):
            raise ValueError(f"c must be a finite float >= 0, got {c!r}")
        if isinstance(niters, bool) or not isinstance(niters, int) or niters < 1:
            raise ValueError(f"niters must be an int >= 1, got {niters!r}")
        if isinstance(subsample_dim, bool) or not isinstance(subsample_dim, int) or subsample_dim < 1:
            raise ValueError(f"subsample_dim must be an int >= 1, got {subsample_dim!r}")
        self.f = f
        self.c = float(c)
        self.niters = niters
        self.subsample_dim = subsample_dim

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n, d = rows.n, rows.d
        n_remove = int(self.c * self.f + 1e-9)
        if n - n_remove < 1:
            raise ValueError(
                f"DnC removes floor(c*f)={n_remove} updates per iteration and needs n > that; "
                f"got n={n} updates and f={self.f} (c={self.c})")
        b = min(self.subsample_dim, d)
        ids = ctx.ids(n)
        diagnostics: Dict[str, object] = {"b": b, "removed_per_iteration": n_remove}
        kept = torch.ones(n, dtype=torch.bool)
        score_max = torch.full((n,), -torch.inf, dtype=torch.float64)
        with timed(diagnostics, "dnc"):
            for _ in range(self.niters):
                if b < d:
                    sub = rows.columns(torch.randperm(d, generator=ctx.generator)[:b])
                else:
                    sub = rows.materialise()
                s = dnc_scores(sub).cpu()
                good = torch.zeros(n, dtype=torch.bool)
                good[order_by_score(s, ids)[: n - n_remove]] = True
                kept &= good
                score_max = torch.maximum(score_max, s)
        return Selection(kept, {"dnc": (~kept).nonzero().flatten()}, {"dnc": score_max.float()},
                         diagnostics, uniform_weights(kept))
