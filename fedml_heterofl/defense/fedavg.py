"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017, Alg. 1): the sample-weighted mean of the updates, the no-defense baseline.

``Δ = Σ_i (n_i / Σ_j n_j) g_i`` with ``n_i`` the local sample count of client i (``weighted=True``),
or the plain mean ``Δ = (1/n) Σ_i g_i``.
"""
from __future__ import annotations

from typing import Tuple

import torch

from fedml_heterofl.defense.base import RoundContext, RowsDefense, Selection, register, uniform_weights
from fedml_heterofl.defense.rows import Rows


@register
class FedAvg(RowsDefense):
    """FedAvg: ``Δ = Σ_i n_i g_i / Σ_j n_j`` (McMahan et al. 2017, Alg. 1 server step).

    Args:
        weighted: weight each update by ``ctx.sample_counts`` (default True, as in the paper,
            where the server averages ``w_{t+1} = Σ_k (n_k/n) w^k_{t+1}``). With ``False``, or when
            the round has no sample counts, the plain mean is used (the paper's equal-size case).

    Keeps every (finite, non-zero) update; no robustness assumption.
    """

    name = "fedavg"
    honest_majority = False
    min_updates = 1

    def __init__(self, *, weighted: bool = True) -> None:
        if not isinstance(weighted, bool):
            raise ValueError(f"weighted must be a bool (True or False), got {weighted!r}")
        self.weighted = weighted

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("sample_counts",) if self.weighted else ()

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        kept = torch.ones(n, dtype=torch.bool)
        counts = ctx.sample_counts
        diagnostics = {"weighted": False}
        if self.weighted and counts is not None:
            counts = torch.as_tensor(counts).reshape(-1).to(torch.float64)
            if counts.numel() != n:
                raise ValueError(f"sample_counts has {counts.numel()} entries for n={n} updates")
            if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()) or float(counts.sum()) <= 0:
                raise ValueError(f"sample_counts must be finite, >= 0 and not all 0, got {counts.tolist()}")
            weights = (counts / counts.sum()).float()
            diagnostics = {"weighted": True, "total_samples": float(counts.sum())}
        else:
            weights = uniform_weights(kept)
        return Selection(kept, {}, {}, diagnostics, weights)
