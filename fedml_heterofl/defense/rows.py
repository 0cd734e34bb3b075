"""Row views: everything a rule reads of a round's updates ``U``.

A rule whose selection reads ``U`` only through a :class:`Rows` view (its Gram matrix, squared
norms, dot products with a vector, a subset of columns, and the losses of the models ``w_t + g_i``)
can be evaluated on two kinds of rounds with the same code:

* :class:`DenseRows` — the updates themselves (the server's call);
* :class:`AffineRows` — the candidate rounds of the adaptive attack's oracle (HeteroFL paper Alg. 7,
  NDSS'21's AGR-tailored search): ``cat(K, b + γΔ)`` for known rows ``K`` (k, d), a base ``b`` (d,)
  and f directions ``Δ`` (f, d). Every quantity above is cheap to update in γ from pieces computed
  once per round (:class:`AffineBasis`): with ``Z = [K; Δ; b]`` and ``H = Z Zᵀ`` (float64), a
  candidate row is ``m_i Z`` for a coefficient row ``m_i`` (``e_i`` for a known row, ``γ e_{k+j} +
  e_{k+f}`` for poisoned row j), so the Gram matrix is ``M H Mᵀ`` — O(n²·(k+f)) per γ, no pass over
  d. Dot products with a vector ``v`` are ``M (Z v)`` with ``Z v`` computed once; the known rows'
  model losses are computed once and only the f poisoned models are evaluated per γ. Columns and
  rows are materialised exactly as the attack sends them (:func:`poisoned_rows`).

Gram matrices, squared norms and dot products are float64 in both views (accumulated over column
blocks, no float64 copy of ``U``), so a decision the oracle predicts from the pieces is the decision
the server takes on the rows, up to the float32 rounding of the poisoned rows. That rounding matters
at the γ the search ends on — the search drives γ to a decision boundary, to within far less than a
float32 ulp — so the candidate the attack submits is evaluated ``rounded``: the poisoned rows' blocks
of the Gram matrix and their dot products come from the rows as sent (one O((k + f)·f·d) pass).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor

Batch = Tuple[Tensor, Tensor]
#: ``loss_fn(params, batch) -> losses``: mean loss of each of ``k`` flat parameter vectors
#: ``params`` of shape ``(k, d)`` on ``batch = (x, y)``; returns shape ``(k,)``.
LossFn = Callable[[Tensor, Batch], Tensor]

#: columns per block of the float64 accumulations (bounds the float64 temporaries at n x CHUNK)
CHUNK = 1 << 13
#: the scale of a candidate round's poisoned rows: one γ for all f, or one per row as an ``(f, 1)`` tensor
#: in the directions' dtype (:func:`row_scales`)
Gamma = Union[float, Tensor]


@dataclass(frozen=True)
class Shift:
    """A vector ``c`` outside the rows in an aggregate ``Σ_i w_i g_i + β c`` (centered clipping's centre,
    :meth:`Defense.affine_aggregate <fedml_heterofl.defense.base.Defense.affine_aggregate>`), with ``‖c‖²``
    (float64)."""

    beta: float
    vector: Tensor
    sq_norm: float


def gram_matrix(updates: Tensor, dtype: torch.dtype = torch.float32, chunk: int = CHUNK) -> Tensor:
    """``G = U Uᵀ`` of shape ``(n, n)`` in ``dtype``.

    In float64 the product is accumulated over column blocks of ``chunk`` so that no float64
    copy of the whole ``U`` is made. Everything HeteroFL's steps 1, 2, 4 and the distance-based
    baselines need (norms, cosines, squared distances) follows from ``G`` (:mod:`~fedml_heterofl.defense.gram`).
    """
    if dtype == updates.dtype:
        return updates @ updates.T
    return _blocked(lambda s: updates[:, s], updates.shape[1], updates.shape[0], dtype, updates.device, chunk)


def _blocked(block: Callable[[slice], Tensor], d: int, rows: int, dtype: torch.dtype, device: torch.device,
             chunk: int = CHUNK) -> Tensor:
    """``Σ_blocks B Bᵀ`` over the column blocks ``B = block(slice)`` of a ``(rows, d)`` matrix, in ``dtype``."""
    G = torch.zeros(rows, rows, dtype=dtype, device=device)
    for start in range(0, d, chunk):
        b = block(slice(start, start + chunk)).to(dtype)
        G.addmm_(b, b.T)
    return G


def cross64(a: Tensor, b: Tensor, chunk: int = CHUNK) -> Tensor:
    """``A Bᵀ`` of shape ``(m, p)`` in float64, accumulated over column blocks."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], chunk):
        out.addmm_(a[:, start:start + chunk].double(), b[:, start:start + chunk].double().T)
    return out


def matvec64(updates: Tensor, v: Tensor, chunk: int = CHUNK) -> Tensor:
    """``U v`` in float64 (shape ``(n,)``), accumulated over column blocks."""
    out = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    v = v.reshape(-1).to(updates.device)
    for start in range(0, updates.shape[1], chunk):
        out.addmv_(updates[:, start:start + chunk].double(), v[start:start + chunk].double())
    return out


def sq_norms64(updates: Tensor, chunk: int = CHUNK) -> Tensor:
    """``‖g_i‖²`` in float64 (shape ``(n,)``), accumulated over column blocks."""
    out = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    for start in range(0, updates.shape[1], chunk):
        out += updates[:, start:start + chunk].double().square().sum(dim=1)
    return out


def finite_rows(updates: Tensor) -> Tuple[Tensor, Tensor]:
    """``(finite, norms)``: which rows of ``updates`` (n, d) have only finite entries, and the rows'
    norms. One pass: a row's norm is NaN/Inf iff the row has a NaN/Inf entry or its squares overflow,
    which the exact check on those few rows tells apart (``torch.isfinite`` over all of U costs 25x
    more than the norm)."""
    norms = torch.linalg.vector_norm(updates, dim=1)
    finite = torch.isfinite(norms)
    if not bool(finite.all()):
        suspect = (~finite).nonzero().flatten()
        finite[suspect] = torch.isfinite(updates[suspect]).all(dim=1)
    return finite, norms


def poisoned_rows(base: Tensor, directions: Tensor, gamma: Gamma) -> Tensor:
    """``b + γΔ_j`` for every direction row, in ``directions``' dtype: ``γΔ`` rounded, then ``+ b``
    rounded — the one definition of the rows the adaptive attack sends and its oracle evaluates
    (``gamma`` per row: ``b + γ_jΔ_j``)."""
    return torch.mul(directions, gamma).add_(base)


def row_scales(gamma: float, poisoned: int, f: int, dtype: torch.dtype) -> Gamma:
    """The scales that send ``b + γΔ_j`` from the first ``poisoned`` of f rows and ``b`` itself
    (``γ_j = 0``) from the others: ``gamma`` when all f are poisoned (the common scale of Alg. 7), else an
    ``(f, 1)`` tensor in ``dtype``."""
    if poisoned == f:
        return float(gamma)
    scales = torch.zeros(f, 1, dtype=dtype)
    scales[:poisoned] = gamma
    return scales


def _largest_scale(gamma: Gamma) -> float:
    """``max_j |γ_j|`` (float64)."""
    return float(gamma.abs().max().double()) if isinstance(gamma, Tensor) else abs(gamma)


def first_equal_rows(rows: Tensor) -> Tensor:
    """For each row of ``rows`` ``(m, d)``, the index of the first row equal to it bit for bit (itself
    when none before it is). A row is compared, as bits, only with earlier rows of the same sum — a
    filter of one pass, so m long rows cost O(m·d) plus one comparison per likely copy."""
    sums = rows.sum(dim=1)
    bits = rows.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[rows.element_size()])
    first = torch.arange(rows.shape[0])
    for i in range(1, rows.shape[0]):
        for j in (sums[:i] == sums[i]).nonzero().flatten().tolist():
            if first[j] == j and torch.equal(bits[i], bits[j]):
                first[i] = j
                break
    return first


def model_losses(params: Tensor, global_params: Tensor, loss_fn: LossFn, batch: Batch, chunk: int,
                 scratch: Optional[Tensor] = None) -> Tensor:
    """``ℓ(batch, w_t + g_i)`` for the rows ``params`` ``(m, d)`` of updates, ``chunk`` models per
    ``loss_fn`` call (float64, shape ``(m,)``); ``scratch`` (at least ``chunk`` rows) holds the models
    instead of a new tensor per call. When ``loss_fn.per_model`` (a model's loss does not depend on the
    models evaluated with it, :class:`~fedml_heterofl.models.ModelLoss`), rows equal bit for bit are
    evaluated once (:func:`first_equal_rows`): the same losses, and the poisoned copies the attacks
    send cost one model each."""
    if params.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    if getattr(loss_fn, "per_model", False) and params.shape[0] > 1:
        first = first_equal_rows(params)
        distinct = (first == torch.arange(params.shape[0])).nonzero().flatten()
        if distinct.numel() < params.shape[0]:
            losses = _evaluate(params[distinct], global_params, loss_fn, batch, chunk, scratch)
            position = torch.empty(params.shape[0], dtype=torch.long)
            position[distinct] = torch.arange(distinct.numel())
            return losses[position[first]]
    return _evaluate(params, global_params, loss_fn, batch, chunk, scratch)


def _evaluate(params: Tensor, global_params: Tensor, loss_fn: LossFn, batch: Batch, chunk: int,
              scratch: Optional[Tensor]) -> Tensor:
    """:func:`model_losses` of every row, ``chunk`` models per ``loss_fn`` call."""

    def models(s: int) -> Tensor:
        block = params[s:s + chunk]
        if scratch is None:
            return global_params + block
        return torch.add(global_params, block, out=scratch[:block.shape[0]])

    out = [loss_fn(models(s), batch).reshape(-1) for s in range(0, params.shape[0], chunk)]
    losses = torch.cat(out).to(torch.float64)
    if losses.numel() != params.shape[0]:
        raise ValueError(f"loss_fn returned {losses.numel()} losses for {params.shape[0]} parameter vectors")
    return losses


class Rows(ABC):
    """What a rule may read of a round's ``n`` updates of length ``d`` (module doc)."""

    n: int
    d: int
    dtype: torch.dtype

    @abstractmethod
    def gram(self) -> Tensor:
        """``U Uᵀ``, float64, shape ``(n, n)``."""

    @abstractmethod
    def sq_norms(self) -> Tensor:
        """``‖g_i‖²``, float64, shape ``(n,)``."""

    @abstractmethod
    def dots(self, v: Tensor) -> Tensor:
        """``U v`` for a vector ``v`` of length d, float64, shape ``(n,)``."""

    @abstractmethod
    def columns(self, idx: Tensor) -> Tensor:
        """``U[:, idx]`` exactly (the rows' dtype), shape ``(n, len(idx))``."""

    @abstractmethod
    def take(self, idx: Tensor) -> Tensor:
        """The rows ``U[idx]`` exactly, shape ``(len(idx), d)``."""

    @abstractmethod
    def subset(self, index: Tensor) -> "Rows":
        """The view of rows ``index`` (in that order)."""

    @abstractmethod
    def screen(self) -> Tuple[Tensor, Tensor]:
        """``(finite, nonzero)`` masks: rows with only finite entries, and rows of non-zero norm."""

    def materialise(self) -> Tensor:
        """All rows as one ``(n, d)`` tensor."""
        return self.take(torch.arange(self.n))

    def losses(self, idx: Tensor, global_params: Tensor, loss_fn: LossFn, batch: Batch, chunk: int) -> Tensor:
        """``ℓ(batch, w_t + g_i)`` for rows ``idx`` (:func:`model_losses`), float64."""
        return model_losses(self.take(idx), global_params, loss_fn, batch, chunk)


def as_rows(updates: "Tensor | Rows") -> Rows:
    """``updates`` as a :class:`Rows` view (a tensor becomes :class:`DenseRows`)."""
    return updates if isinstance(updates, Rows) else DenseRows(updates)


class DenseRows(Rows):
    """The view of an ``(n, d)`` tensor of updates (the server's call); the Gram matrix is cached."""

    def __init__(self, updates: Tensor) -> None:
        self.updates = updates
        self.n, self.d = updates.shape
        self.dtype = updates.dtype
        self._gram: Optional[Tensor] = None

    def gram(self) -> Tensor:
        if self._gram is None:
            self._gram = gram_matrix(self.updates, torch.float64)
        return self._gram

    def sq_norms(self) -> Tensor:
        return self._gram.diagonal().clone() if self._gram is not None else sq_norms64(self.updates)

    def dots(self, v: Tensor) -> Tensor:
        return matvec64(self.updates, v)

    def columns(self, idx: Tensor) -> Tensor:
        return self.updates[:, idx.to(self.updates.device)]

    def take(self, idx: Tensor) -> Tensor:
        return self.updates[idx.to(self.updates.device)]

    def materialise(self) -> Tensor:
        return self.updates

    def subset(self, index: Tensor) -> "DenseRows":
        return self if index.numel() == self.n and bool((index == torch.arange(self.n)).all()) \
            else DenseRows(self.updates[index.to(self.updates.device)])

    def screen(self) -> Tuple[Tensor, Tensor]:
        finite, norms = finite_rows(self.updates)
        return finite.cpu(), (norms != 0).cpu()


class AffineBasis:
    """The pieces of one round's candidate rows ``cat(K, b + γΔ)``, computed once (module doc).

    Args:
        known: ``K`` (k, d), the rows that do not depend on γ.
        base: ``b`` (d,); directions: ``Δ`` (f, d), in ``known``'s dtype.
        known_gram: ``K Kᵀ`` (float64) when the caller has it (one known block shared by several bases:
            only the ``[Δ; b]`` rows of ``H`` are then computed); ``K`` must be finite.
    """

    def __init__(self, known: Tensor, base: Tensor, directions: Tensor, known_gram: Optional[Tensor] = None) -> None:
        self.known, self.base, self.directions = known, base.to(known.dtype), directions.to(known.dtype)
        self.k, self.f = known.shape[0], directions.shape[0]
        self.d = known.shape[1]
        finite, norms = finite_rows(known)
        self.known_screen = (finite.cpu(), (norms != 0).cpu())
        # non-finite known rows are screened out of every candidate round; zeros in their place keep
        # their NaN/Inf out of H (0 · NaN would reach every entry of M H Mᵀ)
        self._finite_known = known if bool(finite.all()) else known.where(finite[:, None], 0)
        parts = (self._finite_known, self.directions, self.base[None])
        #: ``H = Z Zᵀ`` of ``Z = [K; Δ; b]``, float64, ``(k + f + 1)²``
        if known_gram is None:
            self.H = _blocked(lambda s: torch.cat([p[:, s] for p in parts]), self.d, self.k + self.f + 1,
                              torch.float64, known.device)
        else:
            self.H = _extend_gram(known_gram, self._finite_known, torch.cat(parts[1:]))
        self._dots: List[Tuple[Tensor, Tensor]] = []
        self._losses: List[Tuple[Tuple[object, ...], Tensor]] = []
        # one buffer for the poisoned rows of the latest candidate that needed them, one for its models
        # w_t + row: a search's candidates reuse them (a fresh f x d tensor per γ is page faults,
        # ~20 % of a CNN-sized search)
        #: ``max|b_i|``, ``max|Δ_ji|`` (float64): bound the poisoned rows' entries (:meth:`_Candidate.screen`)
        self.max_base = float(self.base.abs().max().double()) if self.d else 0.0
        self.max_direction = float(self.directions.abs().max().double()) if self.d and self.f else 0.0
        self._rows: Optional[Tensor] = None
        self._rows_owner: Optional["_Candidate"] = None
        self._models: Optional[Tensor] = None

    def coefficients(self, gamma: Gamma) -> Tensor:
        """``M`` (k + f, k + f + 1): row i of the candidate set is ``M_i Z``."""
        k, f = self.k, self.f
        M = torch.zeros(k + f, k + f + 1, dtype=torch.float64)
        M[torch.arange(k), torch.arange(k)] = 1.0
        M[torch.arange(k, k + f), torch.arange(k, k + f)] = (
            gamma.reshape(-1).to(torch.float64) if isinstance(gamma, Tensor) else float(gamma))
        M[k:, k + f] = 1.0
        return M

    def basis_dots(self, v: Tensor) -> Tensor:
        """``Z v`` (float64), computed once per vector ``v``."""
        for vec, zv in self._dots:
            if vec is v:
                return zv
        zv = torch.cat([matvec64(self._finite_known, v), matvec64(self.directions, v), matvec64(self.base[None], v)])
        self._dots.append((v, zv))
        return zv

    def known_losses(self, global_params: Tensor, loss_fn: LossFn, batch: Batch, chunk: int) -> Tensor:
        """``ℓ(batch, w_t + K_i)`` for every known row, computed once per ``(w_t, loss_fn, batch)``."""
        return _cached(self._losses, (global_params, loss_fn, batch),
                       lambda: model_losses(self.known, global_params, loss_fn, batch, chunk))

    def rows(self, gamma: Gamma, rounded: bool = False) -> "AffineRows":
        """The candidate round at scale ``gamma`` (one γ, or one per row: :func:`row_scales`): rows
        ``cat(K, b + γΔ)``; ``rounded``: the poisoned rows as sent (:func:`poisoned_rows`) in the Gram
        matrix and dot products (module doc)."""
        gamma = gamma if isinstance(gamma, Tensor) else float(gamma)
        return AffineRows(_Candidate(self, gamma, rounded), torch.arange(self.k + self.f))


def _extend_gram(known_gram: Tensor, known: Tensor, tail: Tensor) -> Tensor:
    """``Z Zᵀ`` of ``Z = [K; T]`` from ``K Kᵀ``: only the rows of ``T`` are multiplied (float64)."""
    k = known.shape[0]
    H = torch.empty(k + tail.shape[0], k + tail.shape[0], dtype=torch.float64, device=known.device)
    H[:k, :k] = known_gram.to(device=known.device, dtype=torch.float64)
    cross = cross64(tail, known)
    H[k:, :k], H[:k, k:] = cross, cross.T
    H[k:, k:] = cross64(tail, tail)
    return H


def _cached(cache: List[Tuple[Tuple[object, ...], Any]], key: Tuple[object, ...], make: Callable[[], Any]) -> Any:
    """The value stored in ``cache`` under ``key`` (compared by identity), made and stored on first use."""
    for other, value in cache:
        if all(a is b for a, b in zip(other, key)):
            return value
    value = make()
    cache.append((key, value))
    return value


class _Candidate:
    """One γ of an :class:`AffineBasis`: its coefficients and (lazily) its materialised poisoned rows
    and the losses of their models, each model evaluated at most once per ``(w_t, loss_fn, batch)``."""

    def __init__(self, basis: AffineBasis, gamma: Gamma, rounded: bool = False) -> None:
        self.basis, self.gamma, self.rounded = basis, gamma, rounded
        self.M = basis.coefficients(gamma)
        self._sq_norms: Optional[Tensor] = None
        self._gram: Optional[Tensor] = None
        self._losses: List[Tuple[Tuple[object, ...], Tuple[Tensor, Tensor]]] = []

    def gram(self) -> Tensor:
        """The ``(k + f)²`` Gram matrix of the candidate rows, with ``rounded`` the poisoned rows'
        blocks from the rows as sent (the known block from ``H`` either way)."""
        if self._gram is None:
            basis, k = self.basis, self.basis.k
            self._gram = self.M @ basis.H @ self.M.T
            if self.rounded:
                cross = cross64(torch.cat([basis._finite_known, self.poisoned]), self.poisoned)
                self._gram[:, k:] = cross
                self._gram[k:, :k] = cross[:k].T
        return self._gram

    def dots(self, v: Tensor) -> Tensor:
        """``(k + f,)`` dot products of the candidate rows with ``v``: the known rows' from ``Z v``, the
        poisoned rows' from the rows as sent (an O(f·d) pass, as the rules that read dot products and
        norms — FLTrust, Zeno — read them per row)."""
        out = self.M @ self.basis.basis_dots(v)
        out[self.basis.k:] = matvec64(self.poisoned, v)
        return out

    def sq_norms(self) -> Tensor:
        """``(k + f,)`` squared norms: the known rows' from ``H``, the poisoned rows' from the rows as sent."""
        if self._sq_norms is None:
            basis = self.basis
            self._sq_norms = torch.cat([basis.H.diagonal()[:basis.k], sq_norms64(self.poisoned).to(basis.H.device)])
        return self._sq_norms

    def poisoned_losses(self, j: Tensor, global_params: Tensor, loss_fn: LossFn, batch: Batch,
                        chunk: int) -> Tensor:
        """``ℓ(batch, w_t + b + γΔ_j)`` for the poisoned rows ``j`` (float64), each model evaluated at
        most once per ``(w_t, loss_fn, batch)``.

        Losses of a part of the poisoned rows (an early exit's one-at-a-time scores) are kept only when
        ``loss_fn.per_model`` says a model's loss does not depend on the models evaluated with it
        (:class:`~fedml_heterofl.models.ModelLoss`); otherwise only the losses of all f rows computed
        together are kept — as a rule's selection asks for them — so that the selection sees the values
        it would compute itself (a vectorised loss may round a model's loss differently in another batch)."""
        values, done = _cached(self._losses, (global_params, loss_fn, batch),
                               lambda: (torch.zeros(self.basis.f, dtype=torch.float64),
                                        torch.zeros(self.basis.f, dtype=torch.bool)))
        todo = j[~done[j]].unique()  # sorted: all f rows are arange(f)
        if todo.numel() == 0:
            return values[j]
        basis = self.basis
        rows = self.poisoned if todo.numel() == basis.f else self.poisoned[todo]
        if basis._models is None or basis._models.shape[0] < min(chunk, basis.f):
            basis._models = torch.empty(min(chunk, basis.f), basis.d, dtype=rows.dtype, device=rows.device)
        losses = model_losses(rows, global_params, loss_fn, batch, chunk, scratch=basis._models)
        if todo.numel() == basis.f or getattr(loss_fn, "per_model", False):
            values[todo] = losses
            done[todo] = True
            return values[j]
        out = values.clone()
        out[todo] = losses
        return out[j]

    def screen(self) -> Tuple[Tensor, Tensor]:
        """``(finite, nonzero)`` of the poisoned rows as sent, without a pass over them when a bound
        settles it: every entry of ``b + γΔ`` is at most ``B = max|b| + |γ|·max|Δ|`` before rounding and
        is rounded twice (``γΔ``, then ``+ b``) by at most ``B·2⁻²⁴`` each, so with ``B < 10³⁷`` every
        row is finite, and a row whose exact norm (from ``H``) exceeds ``√d·B·2⁻²²`` is not zero after
        rounding. Otherwise (rows near overflow, or a poisoned row near zero) the rows are screened."""
        basis, k = self.basis, self.basis.k
        bound = basis.max_base + _largest_scale(self.gamma) * basis.max_direction
        if math.isfinite(bound) and bound < 1e37:
            m = self.M[k:]
            exact = ((m @ basis.H) * m).sum(dim=1).clamp_min(0).sqrt()
            if bool((exact > math.sqrt(basis.d) * bound * 2.0 ** -22).all()):
                ones = torch.ones(basis.f, dtype=torch.bool)
                return ones, ones.clone()
        finite, norms = finite_rows(self.poisoned)
        return finite.cpu(), (norms != 0).cpu()

    @property
    def poisoned(self) -> Tensor:
        """The poisoned rows ``b + γΔ`` exactly as :func:`poisoned_rows` makes them, in the basis's
        buffer (valid until another candidate of the basis needs its rows: use them at once; a candidate
        whose buffer was taken writes it again)."""
        basis = self.basis
        if basis._rows_owner is not self:
            if basis._rows is None:
                basis._rows = torch.empty_like(basis.directions)
            torch.mul(basis.directions, self.gamma, out=basis._rows).add_(basis.base)
            basis._rows_owner = self
        return basis._rows


class AffineRows(Rows):
    """The rows ``positions`` of a candidate round ``cat(K, b + γΔ)`` (module doc)."""

    def __init__(self, candidate: _Candidate, positions: Tensor) -> None:
        self.candidate, self.positions = candidate, positions
        basis = candidate.basis
        self.n, self.d, self.dtype = positions.numel(), basis.d, basis.known.dtype
        self.M = candidate.M[positions]
        self._gram: Optional[Tensor] = None

    def _split(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        """Masks over ``idx`` of the known and poisoned rows, and their positions in K / Δ."""
        pos = self.positions[idx]
        return pos < self.candidate.basis.k, pos

    def gram(self) -> Tensor:
        if self._gram is None:
            if self.candidate.rounded:
                self._gram = self.candidate.gram()[self.positions][:, self.positions]
            else:
                self._gram = self.M @ self.candidate.basis.H @ self.M.T
        return self._gram

    def sq_norms(self) -> Tensor:
        return self.candidate.sq_norms()[self.positions]

    def dots(self, v: Tensor) -> Tensor:
        return self.candidate.dots(v)[self.positions]

    def columns(self, idx: Tensor) -> Tensor:
        basis = self.candidate.basis
        idx = idx.to(basis.known.device)
        full = torch.cat([basis.known[:, idx], poisoned_rows(basis.base[idx], basis.directions[:, idx],
                                                             self.candidate.gamma)])
        return full[self.positions]

    def take(self, idx: Tensor) -> Tensor:
        basis = self.candidate.basis
        is_known, pos = self._split(idx)
        out = torch.empty(idx.numel(), self.d, dtype=self.dtype, device=basis.known.device)
        out[is_known] = basis.known[pos[is_known]]
        if bool((~is_known).any()):
            out[~is_known] = self.candidate.poisoned[pos[~is_known] - basis.k]
        return out

    def subset(self, index: Tensor) -> "AffineRows":
        return AffineRows(self.candidate, self.positions[index])

    def screen(self) -> Tuple[Tensor, Tensor]:
        basis = self.candidate.basis
        finite, nonzero = torch.ones(self.n, dtype=torch.bool), torch.ones(self.n, dtype=torch.bool)
        is_known, pos = self._split(torch.arange(self.n))
        finite[is_known] = basis.known_screen[0][pos[is_known]]
        nonzero[is_known] = basis.known_screen[1][pos[is_known]]
        if bool((~is_known).any()):
            pf, pn = self.candidate.screen()
            finite[~is_known] = pf[pos[~is_known] - basis.k]
            nonzero[~is_known] = pn[pos[~is_known] - basis.k]
        return finite, nonzero

    def losses(self, idx: Tensor, global_params: Tensor, loss_fn: LossFn, batch: Batch, chunk: int) -> Tensor:
        basis = self.candidate.basis
        is_known, pos = self._split(idx)
        out = torch.empty(idx.numel(), dtype=torch.float64)
        if bool(is_known.any()):
            out[is_known] = basis.known_losses(global_params, loss_fn, batch, chunk)[pos[is_known]]
        if bool((~is_known).any()):
            out[~is_known] = self.candidate.poisoned_losses(pos[~is_known] - basis.k, global_params, loss_fn,
                                                            batch, chunk)
        return out

    def deviation(self, weights: Tensor, shift: Optional[Shift] = None) -> float:
        """``‖Σ_i w_i g_i + β c − b‖`` for weights over these rows and a ``shift`` ``β c`` (none: 0), the
        aggregate's distance from the base: ``‖x Z + β c‖²`` for its coefficients ``x`` over ``Z``."""
        basis = self.candidate.basis
        x = weights.to(torch.float64) @ self.M
        x[basis.k + basis.f] -= 1.0
        sq = x @ basis.H @ x
        if shift is not None:
            sq = sq + 2 * shift.beta * (x @ basis.basis_dots(shift.vector)) + shift.beta ** 2 * shift.sq_norm
        return float(sq.clamp_min(0).sqrt())

    def against(self, weights: Tensor, shift: Optional[Shift] = None) -> float:
        """``−⟨Σ_i w_i g_i + β c, b⟩ / ‖b‖``: the aggregate's component against the base (0 for a zero base)."""
        basis = self.candidate.basis
        H, last = basis.H, basis.k + basis.f
        norm = float(H[last, last].clamp_min(0).sqrt())
        dot = weights.to(torch.float64) @ self.M @ H[:, last]
        if shift is not None:
            dot = dot + shift.beta * basis.basis_dots(shift.vector)[last]
        return -float(dot) / norm if norm > 0 else 0.0
