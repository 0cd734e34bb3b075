"""Contracts shared by every aggregation rule (DESIGN §3) and the small tensor helpers they use.

An update is a delta ``g_i = w_i - w_t``. A round's updates are one float tensor ``U`` of shape
``(n, d)``. A :class:`Defense` is a callable object, configured by keyword-only arguments that its
``__init__`` validates; ``defense(U, ctx)`` returns an :class:`AggregationResult`.

Selection and averaging are separate: :meth:`Defense.select` decides which rows are kept (and with
which weights), :meth:`Defense.combine` turns the selection into the aggregate. Detection metrics
read the selection; the adaptive attack reads the rule's :class:`Oracle` (:meth:`Defense.oracle`),
which decides as the rule would on candidate rounds ``cat(known, b + γΔ)``. For a
:class:`RowsDefense` — a rule that reads the updates only through a
:class:`~fedml_heterofl.defense.rows.Rows` view — the oracle costs O(n²) per γ plus the f poisoned
models, not a whole call (DESIGN §13); every other rule is called on the materialised rows.

Rows that are not finite or have zero norm are removed before any rule sees them and are reported
under ``removed_by["non_finite"]`` / ``removed_by["zero_norm"]``. When every row is removed the
aggregate is the zero update (the global model stays as it is) and a warning is logged.
"""
from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fedml_heterofl.defense.rows import (  # noqa: F401  (gram_matrix, finite_rows: re-exported)
    AffineBasis,
    Batch,
    DenseRows,
    Gamma,
    LossFn,
    Rows,
    finite_rows,
    gram_matrix,
)

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
    from :class:`RowsDefense`, which gives the adaptive attack a fast :meth:`oracle`.
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
        """Screening, then :meth:`select_rows` on the valid rows (shared by the call and the oracle).

        Rows with NaN/Inf entries or zero norm are removed (``screened``); with fewer valid rows
        than ``min_updates`` (but some) a ``ValueError`` says so, with none ``selection`` is ``None``.
        """
        index, screened = _screen(rows)
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

    def oracle(self, known: Tensor, base: Tensor, directions: Tensor, ctx: RoundContext, *,
               plain: bool = False, known_gram: Optional[Tensor] = None) -> "Oracle":
        """This rule's decisions on the candidate rounds ``cat(known, base + γ·directions)`` for any γ
        (the adaptive attack's oracle, :class:`Oracle`); ``ctx`` describes those rows. ``plain``
        calls the rule on the materialised rows for every γ (the reference the fast path is tested
        against, and what a rule without a fast path gets anyway). ``known_gram``: ``known``'s float64
        Gram matrix, when the caller builds several oracles over the same finite known rows."""
        return Oracle(self, known, base, directions, ctx, plain=plain, known_gram=known_gram)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class RowsDefense(Defense):
    """A rule whose selection reads the updates only through a :class:`~fedml_heterofl.defense.rows.Rows`
    view (Gram matrix, norms, dot products, columns, model losses): subclasses implement
    :meth:`select_rows`, and the adaptive attack's :class:`Oracle` then evaluates each γ in O(n²)
    from pieces computed once per round, plus the f poisoned models where the rule evaluates models
    (DESIGN §13)."""

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
    """A defense's decisions on the candidate rounds ``cat(known, base + γ·directions)`` (HeteroFL
    paper Alg. 7; NDSS'21's AGR-tailored attacks): ``oracle(γ) -> OracleOutcome``.

    Each call decides exactly as the rule would on those rows, with a private copy of ``ctx``'s
    generator (so it draws what the server's call will draw and leaves it untouched). For a
    :class:`RowsDefense` the rows are an :class:`~fedml_heterofl.defense.rows.AffineRows` view over
    pieces computed once (:class:`~fedml_heterofl.defense.rows.AffineBasis`), and the harm measures of a
    weighted aggregate come from the same pieces; any other rule (Median, a user's rule) is called
    on the materialised rows, as is every rule with ``plain=True``.
    """

    def __init__(self, defense: Defense, known: Tensor, base: Tensor, directions: Tensor, ctx: RoundContext,
                 *, plain: bool = False, known_gram: Optional[Tensor] = None) -> None:
        self.defense, self.ctx, self.base = defense, ctx, base
        self.plain = plain or not isinstance(defense, RowsDefense)
        self.basis = None if self.plain else AffineBasis(known, base, directions, known_gram)
        if self.plain:  # the candidate round, built once and its poisoned rows rewritten per γ
            self._candidate = torch.cat([known, directions.to(known.dtype)])
            self._directions = directions.to(known.dtype)

    def __call__(self, gamma: Gamma, *, stop_if_removed: bool = False, rounded: bool = False,
                 aggregate: bool = False) -> Optional[OracleOutcome]:
        """The outcome at scale ``gamma`` (one γ, or one per poisoned row:
        :func:`~fedml_heterofl.defense.rows.row_scales`); with ``stop_if_removed``, ``None`` instead when
        some poisoned row is certainly removed (screened out, or :meth:`RowsDefense.removes_any`), before
        the full selection — all the adaptive attack asks of a γ that fails. ``rounded``: decide on the
        poisoned rows exactly as they will be sent (float32-rounded; :meth:`AffineBasis.rows
        <fedml_heterofl.defense.rows.AffineBasis.rows>`), for the γ the attack submits; the plain call
        always does. ``aggregate``: the outcome carries the aggregate itself (:attr:`OracleOutcome.update`,
        materialised as the server's call computes it)."""
        ctx = private_generator(self.ctx)
        if self.plain:
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
        weighted = type(self.defense).combine is Defense.combine
        update = self.defense.combine(decision.rows.materialise(), sel, decision.ctx) \
            if aggregate or not weighted else None
        if weighted:  # the harm measures from the pieces: no pass over d
            return OracleOutcome(kept, decision.rows.deviation(sel.weights), decision.rows.against(sel.weights), update)
        return OracleOutcome(kept, _distance(update, self.base), _against(update, self.base), update)

    def _removes_poisoned(self, rows: Rows) -> bool:
        index, _ = _screen(rows)
        k = self.basis.k
        if int((index >= k).sum()) < self.basis.f:  # a poisoned row is malformed: removed
            return True
        ctx = private_generator(self.ctx if index.numel() == rows.n else self.ctx.subset(index, rows.n))
        return self.defense.removes_any(rows.subset(index), ctx, (index >= k).nonzero().flatten())


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
# Screening and shared tensor helpers
# ---------------------------------------------------------------------------------------------

def check_updates(updates: Tensor, d: Optional[int] = None) -> None:
    """Raise ``ValueError`` unless ``updates`` is a floating ``(n, d)`` tensor (``d`` if given)."""
    if not isinstance(updates, Tensor):
        raise ValueError(f"updates must be a torch.Tensor of shape (n, d), got {type(updates).__name__}")
    if updates.dim() != 2:
        raise ValueError(f"updates must have shape (n, d), got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be a floating-point tensor, got dtype {updates.dtype}")
    if d is not None and updates.shape[1] != d:
        raise ValueError(f"updates have length {updates.shape[1]}, the model has d={d} parameters")


def screen_updates(updates: Tensor) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """Remove rows with NaN/Inf entries or zero norm.

    Returns ``(clean, index, removed_by)``: the valid rows (``updates`` itself, not a copy, when
    every row is valid), their indices, and ``{"non_finite": idx, "zero_norm": idx}`` for the
    rows removed (keys present only when something was removed).
    """
    check_updates(updates)
    index, removed = _screen(DenseRows(updates))
    clean = updates if index.numel() == updates.shape[0] else updates[index]
    return clean, index, removed


def _screen(rows: Rows) -> Tuple[Tensor, Dict[str, Tensor]]:
    """``(index of the valid rows, {"non_finite": idx, "zero_norm": idx})`` (keys only when non-empty)."""
    finite, nonzero = rows.screen()
    removed: Dict[str, Tensor] = {}
    if not bool(finite.all()):
        removed["non_finite"] = (~finite).nonzero().flatten()
    if not bool((nonzero | ~finite).all()):
        removed["zero_norm"] = (~nonzero & finite).nonzero().flatten()
    return (finite & nonzero).nonzero().flatten(), removed


def stack_updates(rows: Sequence[Tensor], d: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Stack a list of 1-D updates, removing those whose length is not ``d``.

    Returns ``(U, index, wrong_length)``: the ``(k, d)`` float32 stack of the rows of the right
    length, their positions in ``rows``, and the positions of the rows that were dropped.
    """
    ok = [i for i, r in enumerate(rows) if r.dim() == 1 and r.numel() == d]
    bad = [i for i in range(len(rows)) if i not in set(ok)]
    if bad:
        log.warning("removed updates of the wrong length (expected d=%d): positions %s", d, bad)
    U = torch.stack([rows[i].float() for i in ok]) if ok else torch.zeros(0, d)
    return U, torch.tensor(ok, dtype=torch.long), torch.tensor(bad, dtype=torch.long)


def norms_from_gram(G: Tensor) -> Tensor:
    """Euclidean norms ``‖g_i‖ = sqrt(G_ii)``."""
    return G.diagonal().clamp_min(0).sqrt()


def cosine_from_gram(G: Tensor) -> Tensor:
    """Cosine similarities ``G_ij / (‖g_i‖ ‖g_j‖)``, clamped to [-1, 1]."""
    norms = norms_from_gram(G)
    return (G / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)


def sq_distances_from_gram(G: Tensor) -> Tensor:
    """Squared Euclidean distances ``G_ii + G_jj - 2 G_ij`` (clamped at 0, zero diagonal)."""
    diag = G.diagonal()
    D = (diag[:, None] + diag[None, :] - 2.0 * G).clamp_min(0)
    D.fill_diagonal_(0)
    return D


def mask_from_index(index: Tensor, n: int) -> Tensor:
    """Boolean mask of length ``n``, True at ``index``."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[index] = True
    return mask


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


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

class Registry(dict):
    """Name -> class, filled by the :meth:`register` class decorator; :meth:`build` instantiates.

    Shared by the defense and the attack registries; ``kind`` names the entries in error messages.

    Lazy families: :meth:`provide` maps a name prefix (``"fedml:"``) to a module that registers the
    family's classes with :meth:`register_lazy` when it is first imported — on the first lookup of
    such a name (``in``, ``[]``, ``get``, :meth:`build`), so a package that needs a heavy import (FedML)
    is imported only when one of its names is used. Lazy entries are found by lookup but not listed by
    iteration (``sorted(REGISTRY)`` is the package's own names); :meth:`allowed` names both.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._providers: Dict[str, str] = {}
        self._lazy: Dict[str, type] = {}

    def provide(self, prefix: str, module: str) -> None:
        """Names starting with ``prefix`` are registered by importing ``module`` on first lookup."""
        self._providers[prefix] = module

    def register_lazy(self, cls: type) -> type:
        """Add ``cls`` under ``cls.name`` as a lazy entry (its name starts with a provided prefix)."""
        if not any(cls.name.startswith(p) for p in self._providers):
            raise ValueError(f"{cls.name!r} has none of the lazy prefixes {sorted(self._providers)}")
        self._lazy[cls.name] = cls
        return cls

    def _lookup(self, key: object) -> Optional[type]:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if not isinstance(key, str):
            return None
        for prefix, module in self._providers.items():
            if key.startswith(prefix):
                if key not in self._lazy:
                    try:
                        importlib.import_module(module)
                    except ImportError as exc:
                        raise ValueError(f"{self.kind} {key!r} needs {module}, which cannot be imported: {exc}") \
                            from exc
                return self._lazy.get(key)
        return None

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None

    def __getitem__(self, key: str) -> type:
        cls = self._lookup(key)
        if cls is None:
            raise KeyError(key)
        return cls

    def get(self, key: str, default: Any = None) -> Any:
        cls = self._lookup(key)
        return default if cls is None else cls

    def allowed(self) -> str:
        """The allowed names for an error message: the package's own, then each lazy family."""
        families = [f"{p}<name> ({self._providers[p]})" for p in sorted(self._providers)]
        return ", ".join(sorted(dict.keys(self)) + families)

    def register(self, cls: type) -> type:
        """Class decorator: add ``cls`` under ``cls.name`` (a second class under a taken name is an error)."""
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name")
        if cls.name in self and self[cls.name] is not cls:
            raise ValueError(f"{self.kind} name {cls.name!r} is already registered to {self[cls.name].__name__}")
        self[cls.name] = cls
        return cls

    def build(self, name: str, **params: object) -> object:
        """Instantiate the class registered as ``name`` (stripped, lower case) with keyword ``params``.

        Raises ``ValueError`` naming the allowed names for an unknown ``name``, and the class's own
        ``ValueError``/``TypeError`` (prefixed with the name) for bad parameters.
        """
        key = name.strip().lower()
        cls = self._lookup(key)
        if cls is None:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {self.allowed()}")
        try:
            return cls(**params)
        except TypeError as exc:
            raise TypeError(f"{self.kind} {key!r}: {exc}") from exc


REGISTRY = Registry("defense")
#: class decorator adding a :class:`Defense` subclass to :data:`REGISTRY` under ``cls.name``
register = REGISTRY.register
#: FedML 0.9.6's own defenses as ``fedml:<defense_type>`` (the module imports FedML; loaded on first use)
REGISTRY.provide("fedml:", "fedml_heterofl.fedml_bridge.fedml_defenses")


def build_defense(name: str, **params: object) -> Defense:
    """Instantiate the registered defense ``name`` with keyword ``params`` (:meth:`Registry.build`)."""
    return REGISTRY.build(name, **params)
