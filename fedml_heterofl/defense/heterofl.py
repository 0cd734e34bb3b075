"""HeteroFL (Lu, Hu et al., IEEE TIFS 2024, §V, Alg. 1-6): four defensive steps + corrective aggregation.

Each step is a public function that can be called alone; :class:`HeteroFL` composes the steps named
in ``steps`` (Table III's ablations are ``steps=(1,)``, ``(1, 2)``, ``(1, 2, 3)``, ``(1, 2, 3, 4)``).

Steps 1, 2 and 4 only need the Gram matrix ``G = U Uᵀ`` of the updates (norms, cosines and
group-centroid similarities follow from it), so they take ``G``; the composite computes it once, in
float64 (cosines of near-identical sybils cancel in float32, and the adaptive attack's oracle
predicts the decision from float64 pieces). Step 3 needs the models ``w_t + g_i`` on the trigger
set. The composite reads the updates only through a :class:`~fedml_heterofl.defense.rows.Rows`
view, so the adaptive attack's oracle evaluates it in O(n²) per γ plus the f poisoned models.

Choices the paper leaves open (each a parameter of :class:`HeteroFL`):

* **Self-similarity in Alg. 3** (``exclude_self=True``): when an update is scored against a set that
  contains it, its cosine with itself (always 1) is left out; otherwise every score carries a
  constant +1 and, with fewer than two candidates, the "most similar half" is the update itself.
* **Mean-shift bandwidth** (``bandwidth=None``): scikit-learn's ``estimate_bandwidth`` rule with
  ``quantile=bandwidth_quantile`` (0.3, scikit-learn's default, i.e. what ``MeanShift()`` uses when
  no bandwidth is given) on the scalar scores; a fixed float can be given instead. Seeding as
  scikit-learn's ``bin_seeding=True``. :func:`mean_shift_labels` is that algorithm in torch (the
  tests compare it with scikit-learn): ~5 ms instead of ~80 ms per call at n = 100. Scores that are
  all equal (zero bandwidth) form one cluster. Two departures from scikit-learn's estimate
  (:func:`score_bandwidth`): the bandwidth is at least the scores' float resolution
  (``SCORE_RESOLUTION`` relative: identical updates, whose scores differ only by rounding, form one
  cluster), and the nearest *other* score is always counted (``k ≥ 2``). With fewer than
  ``2/quantile`` scores (6 or fewer at 0.3, as in step 2's second mean shift when the largest
  cluster has few members) scikit-learn's ``k = ⌊n·q⌋ = 1`` counts only the score itself: its
  estimate is 0 whatever the scores, and every group would become its own cluster, making all but
  one suspicious even without attackers. With ``k = 2`` the bandwidth is the mean distance to the
  nearest other score.
* **Size of the removed share in Alg. 4 line 24** (``beta=0.2``): ``⌈β·|C_2|⌉`` updates; rounding up
  so that a suspicious group always loses at least one member. 0.2 matches the paper's 20 %
  attackers among n = 100 clients ("a small value to select the minorities", §VII-E).
* **Ties for the largest cluster in Alg. 4 line 18**: the cluster with the higher centre (more
  mutually similar centroids) wins.
* **Member order inside a cluster** (Alg. 4 lines 6-11, "randomly selects"): a random key per
  client, drawn from the round's generator in order of client id, so permuting the clients permutes
  the outcome.
* **Step 1 guard**: the bound ``2(s̃ + r̃)`` estimates twice the benign similarity and assumes
  positive similarities; when ``s̃ + r̃ ≤ 0`` no update is excessively similar and step 1 removes
  nothing (otherwise it would remove the majority).
* **Standard deviation in Alg. 6 line 11**: population standard deviation (``ddof = 0``) of the
  ``max(1, ⌊|D|/2⌋)`` smallest ratios.
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fedml_heterofl.defense.base import (
    Batch,
    LossFn,
    RoundContext,
    RowsDefense,
    Selection,
    register,
    timed,
)
from fedml_heterofl.defense.gram import cosine_from_gram, norms_from_gram
from fedml_heterofl.defense.rows import Rows, as_rows

STEP_NAMES = {
    1: "sybil_direction_removal",
    2: "similarity_detection",
    3: "watermark_verification",
    4: "magnitude_rectification",
}


class StepResult(NamedTuple):
    """What one step decides: ``malicious`` mask over its input set, per-update ``scores``, and
    ``diagnostics`` (thresholds, counts)."""

    malicious: Tensor
    scores: Tensor
    diagnostics: Dict[str, object]


# ---------------------------------------------------------------------------------------------
# Alg. 3
# ---------------------------------------------------------------------------------------------

def relative_cosine_similarity(cos: Tensor, self_index: Optional[Tensor] = None) -> Tensor:
    """RelativeCosineSimilarity(C_1, C_2) (Alg. 3).

    ``s_i = Σ_{j ∈ Γ_i} cos(C_1[j], C_2[i])`` where ``Γ_i`` holds the ``⌊|C_1|/2⌋`` members of
    ``C_1`` most similar to ``C_2[i]``.

    Args:
        cos: cosine matrix of shape ``(|C_2|, |C_1|)``: row i holds ``cos(C_2[i], C_1[j])``.
        self_index: for each row i, the column of ``C_2[i]`` itself when ``C_2 ⊆ C_1``; that
            column is excluded (and ``|Γ_i| = min(⌊|C_1|/2⌋, |C_1| - 1)``). ``None``: nothing excluded.

    Returns:
        Scores of shape ``(|C_2|,)``.
    """
    m, n1 = cos.shape
    if self_index is not None:  # ⌊n1/2⌋ ≤ n1 - 1: the excluded entry is never among the top k
        cos = cos.clone()
        cos[torch.arange(m), self_index] = -math.inf
    return cos.topk(n1 // 2, dim=1).values.sum(dim=1)


def _rcs_within(cos: Tensor, exclude_self: bool) -> Tensor:
    """RCS(C, C) for a square cosine matrix."""
    return relative_cosine_similarity(cos, torch.arange(cos.shape[0]) if exclude_self else None)


# ---------------------------------------------------------------------------------------------
# Step 1, Alg. 2
# ---------------------------------------------------------------------------------------------

def sybil_direction_removal(gram: Tensor, *, factor: float = 2.0, exclude_self: bool = True) -> StepResult:
    """SybilDirectionRemoval(C) (Alg. 2).

    ``s = RCS(C, C)`` (line 2), ``s̃ = median(s)`` (line 3), ``r̃ = median|s - s̃|`` (line 4); the
    updates with ``s_i > factor·(s̃ + r̃)`` are malicious (line 5; the paper's factor is 2). When
    ``s̃ + r̃ ≤ 0`` nothing is removed (module docstring).

    Args:
        gram: ``G = U Uᵀ`` of the (non-empty) update set C, shape ``(n, n)``.
    """
    s = _rcs_within(cosine_from_gram(gram), exclude_self)
    s_med = _median(s)
    r_med = _median((s - s_med).abs())
    bound = factor * (s_med + r_med)
    threshold = bound if bound > 0 else math.inf
    return StepResult(s > threshold, s, {"median": s_med, "mad": r_med, "threshold": threshold})


# ---------------------------------------------------------------------------------------------
# Step 2, Alg. 4
# ---------------------------------------------------------------------------------------------

def estimate_bandwidth(values: Tensor, quantile: float = 0.3, min_neighbours: int = 1) -> float:
    """Mean distance of each value to its k-th nearest value (itself counted),
    ``k = max(min_neighbours, ⌊n·quantile⌋)`` (at most n).

    scikit-learn's ``estimate_bandwidth`` for scalars with ``min_neighbours = 1`` (the mean-shift
    bandwidth of Alg. 4 lines 3 and 17), from the ``(n, n)`` matrix of absolute differences.
    """
    k = min(values.numel(), max(min_neighbours, int(values.numel() * quantile)))
    return float((values[:, None] - values[None, :]).abs().kthvalue(k, dim=1).values.mean())


def mean_shift_labels(values: Tensor, *, bandwidth: Optional[float] = None, quantile: float = 0.3,
                      max_iter: int = 300) -> Tuple[Tensor, Tensor]:
    """Flat-kernel mean-shift clustering of scalars (Alg. 4 lines 3 and 17).

    The algorithm of scikit-learn's ``MeanShift(bandwidth, bin_seeding=True)``, with every seed shifted
    at once as one ``(seeds, n)`` tensor operation (scikit-learn costs ~0.1 s per call at n = 100):

    1. Seeds: the centres ``round(v / h)·h`` of the occupied bins of width ``h`` (float32, as
       scikit-learn), or every value when each value has its own bin.
    2. Each seed moves to the mean of the values within distance ``h`` until it moves by at most
       ``10⁻³·h`` or after ``max_iter`` moves; its intensity is the number of values in its window.
    3. Converged centres, by intensity then centre (both descending), are kept unless a kept centre
       lies within ``h``; each value takes the label of its nearest kept centre.

    Args:
        values: shape ``(n,)``.
        bandwidth: kernel bandwidth ``h``; ``None`` uses :func:`estimate_bandwidth` with ``quantile``.

    Returns:
        ``(labels, centres)``: cluster label of each value and the centre of each cluster. All
        values form one cluster when the bandwidth is zero (more than a quantile of the values are
        equal) or ``n < 2``.
    """
    x = values.detach().double().cpu().flatten()
    n = x.numel()
    if n < 2 or bool((x == x[0]).all()):
        return torch.zeros(n, dtype=torch.long), x.mean().reshape(-1)[:n]
    h = estimate_bandwidth(x, quantile) if bandwidth is None else float(bandwidth)
    if h <= 0:
        return torch.zeros(n, dtype=torch.long), x.mean().reshape(1)
    bins = torch.unique(torch.round(x / h))
    seeds = x if len(bins) == n else (bins.float() * torch.tensor(h, dtype=torch.float32)).double()
    mean, intensity = seeds.clone(), torch.zeros(len(seeds), dtype=torch.long)
    moving = torch.ones(len(seeds), dtype=torch.bool)
    for it in range(max_iter + 1):
        window = (x[None, :] - mean[moving, None]).abs() <= h
        count = window.sum(1)
        shifted = (window * x).sum(1) / count.clamp_min(1)
        stop = (count == 0) | ((shifted - mean[moving]).abs() <= 1e-3 * h) | (it == max_iter)
        idx = moving.nonzero().flatten()
        mean[idx[count > 0]] = shifted[count > 0]
        intensity[idx] = count
        moving[idx[stop]] = False
        if not moving.any():
            break
    # one entry per distinct centre (scikit-learn keys a dict by centre: the last seed's intensity)
    centres, inverse = torch.unique(mean[intensity > 0], return_inverse=True)
    last = torch.zeros(len(centres), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(inverse)), reduce="amax", include_self=False)
    intensity = intensity[intensity > 0][last]
    order = torch.argsort(centres, descending=True)
    centres = centres[order[torch.argsort(intensity[order], descending=True, stable=True)]]
    near = (centres[:, None] - centres[None, :]).abs() <= h
    keep = torch.zeros(len(centres), dtype=torch.bool)
    covered = torch.zeros(len(centres), dtype=torch.bool)
    for i in range(len(centres)):  # greedy suppression: sequential by nature, over the few centres
        if not covered[i]:
            keep[i] = True
            covered |= near[i]
    centres = centres[keep]
    labels = (x[:, None] - centres[None, :]).abs().argmin(1)
    return labels, centres


def _largest_cluster(labels: Tensor, centres: Tensor) -> int:
    """Label of the most populous cluster; ties go to the higher centre."""
    sizes = torch.bincount(labels, minlength=centres.numel())
    best = (sizes == sizes.max()).nonzero().flatten()
    return int(best[centres[best].argmax()])


#: relative resolution of the RCS scores: they come from float32 cosines (rounding ~1e-7), so
#: scores closer than this are equal, and a mean-shift bandwidth below it would split equal scores
SCORE_RESOLUTION = 1e-5


def score_bandwidth(scores: Tensor, bandwidth: Optional[float], quantile: float) -> Optional[float]:
    """The mean-shift bandwidth of step 2: the configured one, else :func:`estimate_bandwidth`'s with
    at least one other score counted (``min_neighbours = 2``), and at least
    ``SCORE_RESOLUTION · max(1, max|s|)``. ``None`` for fewer than 2 scores.

    Two paper-silent choices (module doc): identical updates give RCS scores that differ only by float
    rounding, and must form one cluster (the floor); and with fewer than ``2/quantile`` scores (6 or
    fewer at 0.3, e.g. step 2's second mean shift over few groups) scikit-learn's rule counts only the
    score itself, so its estimate is 0 for any scores and every score would become its own cluster.
    The nearest *other* score is counted instead: the bandwidth is then the mean distance to the
    nearest other score, so at least the closest pair shares a cluster."""
    if bandwidth is not None or scores.numel() < 2:
        return bandwidth
    floor = SCORE_RESOLUTION * max(1.0, float(scores.abs().max()))
    return max(estimate_bandwidth(scores.double(), quantile, min_neighbours=2), floor)


def similarity_detection(
    gram: Tensor,
    keys: Tensor,
    *,
    beta: float = 0.2,
    bandwidth: Optional[float] = None,
    bandwidth_quantile: float = 0.3,
    exclude_self: bool = True,
) -> StepResult:
    """SimilarityDetection(C, β) (Alg. 4): clustering-then-grouping.

    1. ``s = RCS(C, C)`` and mean-shift clusters of the scalars s (lines 2-3), with a bandwidth no
       finer than the scores' float resolution (:func:`score_bandwidth`).
    2. ``r`` = size of the largest cluster; group i takes the i-th member of every cluster that
       has one, members ordered by ``keys`` (lines 5-11).
    3. Group centroids: their cosines are those of the group sums ``A U`` (``A`` the 0/1 group
       membership matrix), from ``A G Aᵀ``; RCS over the centroids and a second mean shift; groups outside its largest
       cluster are suspicious (lines 13-19).
    4. Among the members ``C_2`` of suspicious groups, the ``⌈β·|C_2|⌉`` with the lowest
       ``RCS(C, C_2)`` are malicious (lines 21-24). With self excluded, ``RCS(C, C_2)`` equals the
       line-2 score of each member, so it is reused.

    Args:
        gram: ``G = U Uᵀ`` of the (non-empty) update set C, shape ``(n, n)``.
        keys: random key per update (shape ``(n,)``) giving the member order inside clusters.
        beta: the filtering fraction β.

    Returns:
        Scores are the line-2 RCS values; diagnostics hold the cluster and group counts.
    """
    n = gram.shape[0]
    s = _rcs_within(cosine_from_gram(gram), exclude_self)
    labels, _ = mean_shift_labels(s, bandwidth=score_bandwidth(s, bandwidth, bandwidth_quantile))
    # Rank of each update inside its cluster, by key: sort by (label, key).
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts
    r = int(rank.max()) + 1
    # A sums each group's members: the cosines of group sums are those of the centroids (means)
    A = torch.zeros(r, n, dtype=gram.dtype)
    A[rank, torch.arange(n)] = 1.0
    group_scores = _rcs_within(cosine_from_gram(A @ gram @ A.T), exclude_self)
    g_labels, g_centres = mean_shift_labels(group_scores,
                                            bandwidth=score_bandwidth(group_scores, bandwidth, bandwidth_quantile))
    suspicious_groups = g_labels != _largest_cluster(g_labels, g_centres)
    candidates = suspicious_groups[rank]
    n_remove = math.ceil(beta * int(candidates.sum()) - 1e-9)
    malicious = torch.zeros(n, dtype=torch.bool)
    cand_idx = candidates.nonzero().flatten()
    malicious[cand_idx[torch.argsort(s[cand_idx], stable=True)[:n_remove]]] = True
    diagnostics = {
        "clusters": int(labels.max()) + 1,
        "groups": r,
        "group_clusters": int(g_labels.max()) + 1,
        "suspicious_groups": int(suspicious_groups.sum()),
        "candidates": int(candidates.sum()),
    }
    return StepResult(malicious, s, diagnostics)


# ---------------------------------------------------------------------------------------------
# Step 3, Alg. 5
# ---------------------------------------------------------------------------------------------

def watermark_verification(
    updates: Union[Tensor, Rows],
    global_params: Tensor,
    loss_fn: LossFn,
    trigger_set: Batch,
    *,
    lam: float = -5.0,
    index: Optional[Tensor] = None,
    chunk: int = 128,
) -> StepResult:
    """WatermarkVerification(C, D_trg, w_t, λ) (Alg. 5).

    ``loss_reduction_i = ℓ(D_trg, w_t) - ℓ(D_trg, w_t + g_i)`` (lines 4-5); updates with
    ``loss_reduction_i ≤ λ`` are malicious (lines 6-7), and so are those whose reduction is NaN (a
    model ``w_t + g_i`` with non-finite outputs shows no trigger learning). All candidates are evaluated by
    ``loss_fn`` in batched passes of ``chunk`` models (no Python loop over models, and at most
    ``chunk`` parameter vectors materialised at a time).

    Args:
        updates: ``(n, d)`` tensor or :class:`~fedml_heterofl.defense.rows.Rows` view; global_params:
        ``w_t`` of shape ``(d,)``; loss_fn: see :data:`~fedml_heterofl.defense.base.LossFn`;
        trigger_set: ``D_trg`` labelled L.
        index: the rows of ``updates`` that form C (default: all); results follow this order.
    """
    rows = as_rows(updates)
    index = torch.arange(rows.n) if index is None else index
    base = float(loss_fn(global_params.reshape(1, -1), trigger_set)[0])
    reduction = (base - rows.losses(index, global_params, loss_fn, trigger_set, chunk)).float()
    return StepResult(~(reduction > lam), reduction, {"loss_before": float(base), "lambda": lam})


# ---------------------------------------------------------------------------------------------
# Step 4, Alg. 6
# ---------------------------------------------------------------------------------------------

class MagnitudeResult(NamedTuple):
    """Step 4's outcome: ``malicious`` mask, the ratios ``D``, and the factor ``scale_i`` that
    brings each kept update to the mean norm (0 for removed ones)."""

    malicious: Tensor
    scores: Tensor
    scale: Tensor
    diagnostics: Dict[str, object]


def magnitude_rectification(gram: Tensor, *, factor: float = 8.0) -> MagnitudeResult:
    """MagnitudeRectification(C) (Alg. 6).

    ``D_i = max(‖g_i‖/med, med/‖g_i‖)`` with ``med`` the median norm (lines 1-9); ``m̃, s̃`` are the
    mean and (population) standard deviation of the ``max(1, ⌊|D|/2⌋)`` smallest ``D_i`` (line 11);
    updates with ``D_i > factor·(m̃ + s̃)`` are removed (lines 12-16; paper: factor 8); every
    remaining update is rescaled to the mean norm of the remaining updates (lines 17-20), so
    ``scale_i = mean/‖g_i‖``.

    Args:
        gram: ``G = U Uᵀ`` of the update set C, shape ``(n, n)``.
    """
    norms = norms_from_gram(gram).double()
    n = norms.numel()
    if n == 0:
        empty = norms.new_zeros(0)
        return MagnitudeResult(torch.zeros(0, dtype=torch.bool), empty, empty, {})
    med = torch.quantile(norms, 0.5)
    ratio = torch.maximum(norms / med, med / norms)
    smallest = ratio.sort().values[: max(1, n // 2)]
    m_tilde, s_tilde = smallest.mean(), smallest.std(correction=0)
    threshold = factor * (m_tilde + s_tilde)
    malicious = ratio > threshold
    kept = ~malicious
    mean_norm = norms[kept].mean() if bool(kept.any()) else norms.new_zeros(())
    scale = torch.where(kept, mean_norm / norms, torch.zeros_like(norms))
    diagnostics = {"median_norm": float(med), "threshold": float(threshold), "mean_norm": float(mean_norm)}
    return MagnitudeResult(malicious, ratio.float(), scale, diagnostics)


# ---------------------------------------------------------------------------------------------
# Alg. 1: the composite
# ---------------------------------------------------------------------------------------------

@register
class HeteroFL(RowsDefense):
    """HeteroFL (Alg. 1, lines 8-18): the steps in ``steps``, then corrective aggregation.

    The aggregate is the average of the updates left after the last step (line 17); with step 4
    the remaining updates are first rescaled to their mean norm (Alg. 6, lines 17-20), so the
    aggregate is ``Σ_i (mean/‖g_i‖) g_i / |C_4|``.

    Args:
        steps: the steps to run, a subset of {1, 2, 3, 4} (Table III's ablations), in order.
        beta: β of Alg. 4 (step 2).
        lam: λ of Alg. 5 (step 3); paper: -5.
        sybil_factor: the 2 of Alg. 2 line 5.
        magnitude_factor: the 8 of Alg. 6 line 13.
        bandwidth, bandwidth_quantile: mean-shift bandwidth (module docstring).
        exclude_self: Alg. 3 self-similarity choice (module docstring).
        watermark_chunk: models per batched pass in step 3.

    Step 3 needs ``ctx.loss_fn``, ``ctx.trigger_set`` and ``ctx.global_params``; without them the
    call raises ``ValueError`` (it never silently skips the step).
    """

    name = "heterofl"
    honest_majority = True

    def __init__(
        self,
        *,
        steps: Sequence[int] = (1, 2, 3, 4),
        beta: float = 0.2,
        lam: float = -5.0,
        sybil_factor: float = 2.0,
        magnitude_factor: float = 8.0,
        bandwidth: Optional[float] = None,
        bandwidth_quantile: float = 0.3,
        exclude_self: bool = True,
        watermark_chunk: int = 128,
    ) -> None:
        steps = tuple(steps) if isinstance(steps, Sequence) and not isinstance(steps, str) else (steps,)
        if not steps or any(isinstance(s, bool) or not isinstance(s, Integral) or s not in STEP_NAMES
                            for s in steps) or len(set(steps)) != len(steps):
            raise ValueError(f"steps must be a list of distinct values from {sorted(STEP_NAMES)}, got {list(steps)}")
        steps = tuple(int(s) for s in steps)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if sybil_factor <= 0 or magnitude_factor <= 0:
            raise ValueError(
                f"sybil_factor and magnitude_factor must be > 0, got {sybil_factor} and {magnitude_factor}")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 or None (estimated), got {bandwidth}")
        if not 0.0 < bandwidth_quantile <= 1.0:
            raise ValueError(f"bandwidth_quantile must be in (0, 1], got {bandwidth_quantile}")
        if watermark_chunk < 1:
            raise ValueError(f"watermark_chunk must be >= 1, got {watermark_chunk}")
        self.steps = tuple(sorted(steps))
        self.beta = float(beta)
        self.lam = float(lam)
        self.sybil_factor = float(sybil_factor)
        self.magnitude_factor = float(magnitude_factor)
        self.bandwidth = bandwidth
        self.bandwidth_quantile = float(bandwidth_quantile)
        self.exclude_self = bool(exclude_self)
        self.watermark_chunk = int(watermark_chunk)

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("loss_fn", "trigger_set", "global_params") if 3 in self.steps else ()

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        n = rows.n
        if any(getattr(ctx, key) is None for key in self.requires):
            raise ValueError(
                "HeteroFL step 3 (watermark verification) needs ctx.loss_fn, ctx.trigger_set and "
                "ctx.global_params; provide them or leave 3 out of steps")
        diagnostics: Dict[str, object] = {}
        removed_by: Dict[str, Tensor] = {}
        scores: Dict[str, Tensor] = {}
        with timed(diagnostics, "gram"):
            gram = rows.gram()
        alive = torch.arange(n)
        scale: Optional[Tensor] = None

        def full(values: Tensor) -> Tensor:
            out = torch.full((n,), math.nan)
            out[alive] = values.float()
            return out

        for step in self.steps:
            name = STEP_NAMES[step]
            with timed(diagnostics, name):
                sub_gram = gram[alive][:, alive]
                if step == 1:
                    res = sybil_direction_removal(sub_gram, factor=self.sybil_factor, exclude_self=self.exclude_self)
                elif step == 2:
                    res = similarity_detection(
                        sub_gram, _client_keys(ctx.ids(n), ctx.generator)[alive], beta=self.beta,
                        bandwidth=self.bandwidth, bandwidth_quantile=self.bandwidth_quantile,
                        exclude_self=self.exclude_self)
                elif step == 3:
                    res = watermark_verification(
                        rows, ctx.global_params, ctx.loss_fn, ctx.trigger_set, lam=self.lam, index=alive,
                        chunk=self.watermark_chunk)
                else:
                    res = magnitude_rectification(sub_gram, factor=self.magnitude_factor)
                    scale = res.scale[~res.malicious]
                scores[name] = full(res.scores)
                diagnostics[name] = res.diagnostics
                removed_by[name] = alive[res.malicious]
                alive = alive[~res.malicious]
        kept = torch.zeros(n, dtype=torch.bool)
        kept[alive] = True
        weights = torch.zeros(n, dtype=torch.float64)
        if alive.numel():
            weights[alive] = (scale if scale is not None else torch.ones(alive.numel(), dtype=torch.float64)) / alive.numel()
        return Selection(kept, removed_by, scores, diagnostics, weights.float())


def _client_keys(client_ids: Tensor, generator: torch.Generator) -> Tensor:
    """A uniform random key per row, drawn in order of client id (permutation-equivariant)."""
    draws = torch.rand(client_ids.numel(), generator=generator, dtype=torch.float64)
    keys = torch.empty_like(draws)
    keys[torch.argsort(client_ids, stable=True)] = draws
    return keys


def _median(x: Tensor) -> float:
    """The statistical median (mean of the two middle values for even length) of a non-empty ``x``."""
    return float(torch.quantile(x.double(), 0.5))
