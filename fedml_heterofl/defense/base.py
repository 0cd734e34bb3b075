"""Contracts shared by every aggregation rule, and the small helpers every rule uses.

An update is a delta ``g_i = w_i - w_t``. A round's updates are one float tensor ``U`` of shape
``(n, d)``. A :class:`Defense` is a callable object, configured by keyword-only arguments that its
``__init__`` validates; ``defense(U, ctx)`` returns an :class:`AggregationResult`.

Selection and averaging are separate: :meth:`Defense.select` decides which rows are kept (and with
which weights), :meth:`Defense.combine` turns the selection into the aggregate. Detection metrics
read the selection; the adaptive attack reads the rule's decisions on candidate rounds through
:class:`~fedml_heterofl.defense.oracle.Oracle`, which calls :meth:`Defense.decide` — on a
:class:`~fedml_heterofl.defense.rows.Rows` view in O(n²) per γ for a :class:`RowsDefense` (a rule that
reads the updates only through that view), on the materialised rows for every other rule.

Rows that are not finite or have zero norm are removed before any rule sees them
(:mod:`~fedml_heterofl.defense.screening`) and are reported under ``removed_by["non_finite"]`` /
``removed_by["zero_norm"]``. When every row is removed the aggregate is the zero update (the global
model stays as it is) and a warning is logged.

Rules register under their ``name`` in :data:`REGISTRY` (:class:`~fedml_heterofl.registry.Registry`).
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.rows import Batch, DenseRows, LossFn, Rows, Shift
from fedml_heterofl.defense.screening import check_updates, screen_rows
from fedml_heterofl.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class RoundContext:
    """What the server knows in one round besides the updates.

    Attributes:
        round_idx: the round index t.
        global_params: flat global parameters ``w_t``, shape ``(d,)``.
        generator: seeded generator for every random choice a rule makes.
        client_ids: id of each row of the updates (defaults to positions). Random choices that
            concern clients are keyed on these ids, so permuting clients permutes the outcome.
        sample_counts: local sample count of each row (FedAvg weighting).
        loss_fn: evaluates a batch of flat parameter vectors (watermark, Zeno).
        trigger_set: HeteroFL's ``D_trg`` (Alg. 1, lines 1-3), labelled ``L``.
        validation_batch: server-side validation batch (Zeno).
        server_update: FLTrust's server update ``g_0`` trained on the root dataset, shape ``(d,)``.
        param_layout: the model's parameter layout (an object with ``names``, ``shapes`` and ``numels``
            of the flat vector's parts, in order: :class:`~fedml_heterofl.models.ParamLayout`), for
            rules that work on per-layer tensors (FedML's own defenses, ``fedml:<name>``).
        device: where the rule computes.
    """

    round_idx: int = 0
    global_params: Optional[Tensor] = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    client_ids: Optional[Tensor] = None
    sample_counts: Optional[Tensor] = None
    loss_fn: Optional[LossFn] = None
    trigger_set: Optional[Batch] = None
    validation_batch: Optional[Batch] = None
    server_update: Optional[Tensor] = None
    param_layout: Optional[Any] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def ids(self, n: int) -> Tensor:
        """Client ids of the ``n`` rows (positions when none were given)."""
        if self.client_ids is None:
            return torch.arange(n)
        return self.client_ids

    def subset(self, index: Tensor, n: int) -> "RoundContext":
        """The context of ``n`` rows restricted to rows ``index`` (ids and counts follow the rows)."""
        counts = None if self.sample_counts is None else self.sample_counts[index]
        return replace(self, client_ids=self.ids(n)[index], sample_counts=counts)


@dataclass
class Selection:
    """The outcome of a rule's selection phase.

    Attributes:
        kept: boolean mask of shape ``(n,)``, True for rows that enter the aggregate.
        removed_by: name of the step (or reason) that removed rows -> their row indices.
        scores: named per-row (or per-group) scores the rule computed.
        diagnostics: thresholds used, counts, and ``time_<step>`` seconds per step.
        weights: aggregation weights of shape ``(n,)`` (zero where not kept) for rules whose
            aggregate is the weighted sum ``weights @ U``; ``None`` for rules that combine
            updates non-linearly (Median).
    """

    kept: Tensor
    removed_by: Dict[str, Tensor] = field(default_factory=dict)
    scores: Dict[str, Tensor] = field(default_factory=dict)
    diagnostics: Dict[str, object] = field(default_factory=dict)
    weights: Optional[Tensor] = None

    @property
    def removed(self) -> Tensor:
        """Indices of the rows that were not kept."""
        return (~self.kept).nonzero().flatten()


@dataclass
class AggregationResult(Selection):
    """A :class:`Selection` plus the aggregate ``update`` (shape ``(d,)``) to add to ``w_t``."""

    update: Optional[Tensor] = None


class Defense(ABC):
    """An aggregation rule: ``rule(updates, ctx) -> AggregationResult``.

    Subclasses implement :meth:`select` on screened updates (finite, non-zero rows) and, if the
    aggregate is not ``weights @ U``, :meth:`combine`. ``name`` is the registry key. Rules whose
    selection reads the updates only through a :class:`~fedml_heterofl.defense.rows.Rows` view derive
    from :class:`RowsDefense`, which gives the adaptive attack a fast
    :class:`~fedml_heterofl.defense.oracle.Oracle`.
    """

    name: ClassVar[str] = ""
    #: smallest number of (screened) updates the rule can work with
    min_updates: ClassVar[int] = 1
    #: whether the rule assumes fewer than half of the updates are malicious (f < n/2)
    honest_majority: ClassVar[bool] = False

    @property
    def requires(self) -> Tuple[str, ...]:
        """The :class:`RoundContext` fields this rule reads besides ids and the generator (the
        server fills only these; e.g. FLTrust's server update costs a local training run)."""
        return ()

    def __call__(self, updates: Tensor, ctx: Optional[RoundContext] = None) -> AggregationResult:
        ctx = ctx if ctx is not None else RoundContext()
        check_updates(updates, None if ctx.global_params is None else ctx.global_params.numel())
        n, d = updates.shape
        decision = self.decide(DenseRows(updates), ctx)
        if decision.screened:
            log.warning("removed malformed updates: %s", {k: v.tolist() for k, v in decision.screened.items()})
        if decision.selection is None:
            log.warning("round %d: every update was malformed; the global model stays as it is", ctx.round_idx)
            return AggregationResult(
                kept=torch.zeros(n, dtype=torch.bool),
                removed_by=decision.screened,
                diagnostics={"all_removed": True},
                weights=torch.zeros(n, dtype=updates.dtype),
                update=torch.zeros(d, dtype=updates.dtype, device=updates.device),
            )
        sel = decision.selection
        update = self.combine(decision.rows.materialise(), sel, decision.ctx)
        if not bool(sel.kept.any()):
            log.warning("round %d: %s removed every update; the global model stays as it is",
                        ctx.round_idx, self.name)
            sel.diagnostics["all_removed"] = True
        return _lift(sel, update, decision.index, n, decision.screened)

    def decide(self, rows: Rows, ctx: RoundContext) -> "Decision":
        """Screening, then :meth:`select_rows` on the valid rows (shared by the call and the
        :class:`~fedml_heterofl.defense.oracle.Oracle`).

        Rows with NaN/Inf entries or zero norm are removed (``screened``); with fewer valid rows
        than ``min_updates`` (but some) a ``ValueError`` says so, with none ``selection`` is ``None``.
        """
        index, screened = screen_rows(rows)
        n = rows.n
        if index.numel() < self.min_updates:
            if index.numel() > 0:
                raise ValueError(
                    f"{self.name} needs at least {self.min_updates} valid updates, got {index.numel()} "
                    f"(of n={n}; removed as malformed: {sum(len(v) for v in screened.values())})"
                )
            return Decision(None, index, screened, rows, ctx)
        valid = rows if index.numel() == n else rows.subset(index)
        sub_ctx = ctx if index.numel() == n else ctx.subset(index, n)
        return Decision(self.select_rows(valid, sub_ctx), index, screened, valid, sub_ctx)

    @abstractmethod
    def select(self, updates: Tensor, ctx: RoundContext) -> Selection:
        """Decide which of the (screened) ``updates`` are kept; see :class:`Selection`."""

    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        """:meth:`select` on a row view; rules without a fast path materialise the rows."""
        return self.select(rows.materialise(), ctx)

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        """The aggregate of a selection: ``weights @ U`` (zero update when nothing is kept)."""
        if selection.weights is None:
            raise NotImplementedError(f"{type(self).__name__} returns no weights and must override combine()")
        return selection.weights.to(device=updates.device, dtype=updates.dtype) @ updates

    def affine_aggregate(self, rows: Rows, selection: Selection,
                         ctx: RoundContext) -> Optional[Tuple[Tensor, Optional[Shift]]]:
        """The aggregate as ``Σ_i w_i g_i`` plus an optional :class:`~fedml_heterofl.defense.rows.Shift`
        ``β c``, computed from ``rows``' Gram matrix and dot products — ``(w, shift)`` — so that the
        adaptive attacks' :class:`~fedml_heterofl.defense.oracle.Oracle` gets its harm measures without
        a pass over d; ``None`` where the aggregate is not of that form. Default: a rule that averages
        with its selection's ``weights`` (the base :meth:`combine`)."""
        if type(self).combine is Defense.combine and selection.weights is not None:
            return selection.weights, None
        return None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class RowsDefense(Defense):
    """A rule whose selection reads the updates only through a :class:`~fedml_heterofl.defense.rows.Rows`
    view (Gram matrix, norms, dot products, columns, model losses): subclasses implement
    :meth:`select_rows`, and the adaptive attack's :class:`~fedml_heterofl.defense.oracle.Oracle` then
    evaluates each γ in O(n²) from pieces computed once per round, plus the f poisoned models where the
    rule evaluates models, instead of a pass over the d coordinates per γ."""

    def select(self, updates: Tensor, ctx: RoundContext) -> Selection:
        return self.select_rows(DenseRows(updates), ctx)

    @abstractmethod
    def select_rows(self, rows: Rows, ctx: RoundContext) -> Selection:
        """Decide which of the (screened) rows are kept; see :class:`Selection`."""

    def removes_any(self, rows: Rows, ctx: RoundContext, index: Tensor) -> bool:
        """Whether :meth:`select_rows` certainly removes at least one of the rows ``index``: a sufficient
        test cheaper than the selection, which the oracle tries first when only "are all these rows
        kept?" matters (most tested γ fail). ``False`` means "not certain" (default: never certain)."""
        return False


@dataclass
class Decision:
    """A rule's selection over the ``valid`` rows of a round (``index`` into the round; ``None``
    when every row was malformed), the rows ``screened`` out before it, and the valid rows' context."""

    selection: Optional[Selection]
    index: Tensor
    screened: Dict[str, Tensor]
    rows: Rows
    ctx: RoundContext


def _lift(sel: Selection, update: Tensor, index: Tensor, n: int, screened: Dict[str, Tensor]) -> AggregationResult:
    """Map a selection over the screened rows ``index`` back to all ``n`` rows."""
    if index.numel() == n:
        return AggregationResult(sel.kept, dict(screened) | sel.removed_by, sel.scores, sel.diagnostics,
                                 sel.weights, update)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[index] = sel.kept
    weights = None
    if sel.weights is not None:
        weights = torch.zeros(n, dtype=sel.weights.dtype)
        weights[index] = sel.weights
    removed_by = dict(screened)
    removed_by.update({k: index[v] for k, v in sel.removed_by.items()})
    return AggregationResult(kept, removed_by, sel.scores, sel.diagnostics, weights, update)


# ---------------------------------------------------------------------------------------------
# Helpers of the rules' selections
# ---------------------------------------------------------------------------------------------

def uniform_weights(kept: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Weights ``1/|kept|`` on the kept rows and 0 elsewhere (all zero when nothing is kept)."""
    k = int(kept.sum())
    return kept.to(dtype) / max(k, 1)


def require_f(rule: str, n: int, f: int, *, min_n: int, relation: str) -> None:
    """Raise ``ValueError`` naming both numbers when ``n < min_n`` for a rule's assumption on f."""
    if n < min_n:
        raise ValueError(f"{rule} requires {relation}; got n={n} updates and f={f}")


@contextmanager
def timed(diagnostics: Dict[str, object], step: str) -> Iterator[None]:
    """Record the wall time of a block as ``diagnostics["time_<step>"]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        diagnostics[f"time_{step}"] = time.perf_counter() - start


#: the defenses a configuration can name (``defense_type``)
REGISTRY = Registry("defense", families="fedml_heterofl.defense_families")
#: class decorator adding a :class:`Defense` subclass to :data:`REGISTRY` under ``cls.name``
register = REGISTRY.register


def build_defense(name: str, **params: object) -> Defense:
    """Instantiate the registered defense ``name`` with keyword ``params``
    (:meth:`~fedml_heterofl.registry.Registry.build`)."""
    return REGISTRY.build(name, **params)
