"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021, §III-C, Alg. 1 line 8-10 and Eq. (1)-(3)).

The server trains its own update ``g_0`` on a small clean root dataset. Each client gets the trust
score ``TS_i = ReLU(cos(g_i, g_0))`` (Eq. 1), its update is rescaled to the server's norm
``ĝ_i = (‖g_0‖/‖g_i‖) g_i`` (Eq. 2) and ``Δ = Σ_i TS_i ĝ_i / Σ_j TS_j`` (Eq. 3).
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, timed
from fedml_heterofl.defense.rows import Rows

log = logging.getLogger(__name__)


@register
class FLTrust(RowsDefense):
    """FLTrust: ``Δ = Σ_i ReLU(cos(g_i, g_0)) (‖g_0‖/‖g_i‖) g_i / Σ_j ReLU(cos(g_j, g_0))``.

    Expressed as ``weights @ U`` with ``weights_i = TS_i ‖g_0‖ / (‖g_i‖ Σ_j TS_j)`` (no rescaled copy
    of U). Rows with ``TS_i = 0`` are removed (``removed_by["fltrust"]``); trust scores are under
    ``scores["trust"]``. No parameters. Needs ``ctx.server_update`` (``g_0``, shape ``(d,)``).

    Paper-silent case: a zero server update (``‖g_0‖ = 0``) makes every rescaled update zero, so
    every row is removed and the aggregate is the zero update (``diagnostics["zero_server_update"]``).
    So does a non-finite one (the server's training on its root data overflowed from a diverged
    ``w_t``: no direction to trust; ``diagnostics["non_finite_server_update"]``, with a warning).
    FLTrust does not assume an honest majority.
    """

    name = "fltrust"
    honest_majority = False
    min_updates = 1

    def __init__(self) -> None:
        pass

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("server_update",)

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n, d = rows.n, rows.d
        g0 = ctx.server_update
        if g0 is None:
            raise ValueError("FLTrust needs ctx.server_update (the server's update g_0 on its root dataset)")
        if not isinstance(g0, Tensor) or g0.numel() != d:
            shape = tuple(g0.shape) if isinstance(g0, Tensor) else type(g0).__name__
            raise ValueError(f"FLTrust server_update must have d={d} entries (the update length), got {shape}")
        g0 = g0.reshape(-1)
        diagnostics: Dict[str, object] = {}
        with timed(diagnostics, "trust"):
            norm0 = float(torch.linalg.vector_norm(g0, dtype=torch.float64))
            if norm0 == 0 or not math.isfinite(norm0):  # nothing to trust: no scores to compute
                trust = torch.zeros(n, dtype=torch.float64)
                weights, total = torch.zeros_like(trust), 0.0
                if norm0 == 0:
                    diagnostics["zero_server_update"] = True
                else:
                    diagnostics["non_finite_server_update"] = True
                    log.warning("round %d: FLTrust's server update g_0 is non-finite (its training on the root "
                                "data diverged); no update can be trusted", ctx.round_idx)
            else:
                dots = rows.dots(g0).cpu()  # float64: no overflow for finite float32 rows
                norms = rows.sq_norms().cpu().sqrt()
                trust = (dots / (norms * norm0)).clamp(-1.0, 1.0).relu()
                total = float(trust.sum())
                weights = trust * norm0 / norms / total if total > 0 else torch.zeros_like(trust)
        kept = (trust > 0).cpu()
        diagnostics["server_norm"] = norm0
        diagnostics["trust_sum"] = total
        return Selection(kept, {"fltrust": (~kept).nonzero().flatten()}, {"trust": trust.float().cpu()},
                         diagnostics, weights.float().cpu())
