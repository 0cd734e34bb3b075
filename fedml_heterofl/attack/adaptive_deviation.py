"""The strongest adaptive attack we can build: Eq. (7) of the HeteroFL paper (§VI) searched with the
defense's exact oracle.

Eq. (7) asks for the poisoned updates that push the *defended aggregate* ``A`` furthest from the benign
reference ``g``; the paper's attack (:mod:`~fedml_heterofl.attack.adaptive`, Eq. 8, Alg. 7) solves a
surrogate instead — the largest γ for which all f poisoned copies pass. This attack evaluates the
objective itself: for every candidate it asks the defense's :class:`~fedml_heterofl.defense.oracle.Oracle`
what the server will aggregate and sends the candidate whose aggregate does the most harm.

Harm (``harm``), with ``g = ḡ`` the mean of the round's benign updates (full knowledge):

* ``against`` (default): ``−⟨A, ḡ⟩/‖ḡ‖``, the aggregate's component against the benign mean;
* ``distance``: ``‖ḡ − A‖``, Eq. (7)'s letter;
* ``loss``: ``ℓ(w_t + A)``, the loss of the aggregated model on ``loss_samples`` of the attackers' own
  training samples (a seeded draw each round from :attr:`~fedml_heterofl.attack.base.ModelAttack.own_data`,
  which the standalone and MPI runs hand the attack) — the loss increase, as ``ℓ(w_t)`` is the same for
  every candidate. Each candidate's aggregate is materialised (the oracle's ``aggregate``) and the model
  evaluated once: a pass over the d coordinates and a forward pass per candidate.

Default by measurement (calibrated MNIST/LR: ``config/mnist_lr.yaml`` with learning rate 0.002 as
``config/grids/table1_mnist_lr_calibrated.yaml``, seed 0, HeteroFL, 10 rounds, the first budget: fractions
1, 1/2, 1/4, grid (−3, 6), refine 5; test accuracy after round 10): ``against`` 0.0703, ``distance``
0.6590, the paper's ``adaptive`` 0.6262. ``distance`` rewards any move of ``A``, so it favours large
updates that step 4 of HeteroFL rescales to the kept updates' mean norm — noise; ``against`` rewards
only the part of ``A`` that undoes the descent step, which no rescaling removes (it chose IPM's
direction with all 20 poisoned in every round, all kept). ``loss`` (256 own samples) in the same set-up:
0.0834 — the same choice in every round (IPM's direction, all 20 poisoned, none removed) at other γs, as
the attackers' samples and the test set disagree a little on which γ hurts most — and 1.6× ``against``'s
attack time (17.7 s a round against 11.4, each candidate's aggregate materialised and its model
evaluated); so ``against``, which needs no data, stays the default.

Candidates (each an affine family ``cat(benign, ḡ + γ_jΔ_j)`` of the oracle, :func:`row_scales`):

* directions (``directions``): ``unit_vec``, ``std``, ``sign`` — Alg. 7's μ-flipped copies of
  :func:`~fedml_heterofl.attack.gamma_search.perturbation` (Eq. 8, :func:`flipped_copies`, each family with the
  same seeded flips as the paper's attack); ``ipm`` — f identical copies of ``ḡ − γḡ/‖ḡ‖``, the line of
  IPM's ``−εḡ`` (γ = (1 + ε)‖ḡ‖, ε of :mod:`~fedml_heterofl.attack.ipm`, is on the grid); ``alie`` — f
  identical copies of ``ḡ − γσ``, ALIE's ``μ − zσ`` (its ``z_max(n, f)`` is on the grid);
* poisoned count ``k`` (``fractions`` of f, rounded, at least 1): the first k attackers send the
  poisoned update and the other ``f − k`` send ``ḡ`` (γ_j = 0). ``ḡ`` rather than their honest update:
  it keeps every candidate in the oracle's affine family, so one Gram basis per direction serves all
  counts and scales, and it is what Alg. 7 itself sends at γ = 0; like an honest update it adds no harm;
* γ: a coarse log-spaced grid ``u·2^j`` for ``j`` in ``grid`` (``u = ‖σ‖/‖Δ̃_1‖``, the scale that moves
  a poisoned row by the benign updates' spread), plus the anchors above for k = f; then, where the
  best grid point is interior, ``refine`` golden-section steps on its two neighbours' bracket (a local
  refinement: the best point seen is kept, harm need not be unimodal). At an end of the grid the end
  is kept (against FedAvg the harm grows with γ: the largest grid γ);
* the paper's attack: Alg. 7's γ on the ``std`` family (:func:`~fedml_heterofl.attack.adaptive.alg7_search`,
  the same directions, oracle and search as ``adaptive``) competes as a candidate, so this attack is
  never weaker than ``adaptive`` on the same round by the chosen harm measure.

Budget per round: ``|directions| · |counts| · (|grid| + refine)`` full oracle evaluations, plus the
anchors, Alg. 7's ~21 tests (most stop early) and 2 evaluations of the rows as sent. Defaults:
5 · 2 · (7 + 4) = 110, plus 2 anchors and ~23: ~135 per round. One Gram basis per direction, sharing
the benign block.

The choice (direction, γ, poisoned count, harm) is logged at DEBUG and reported (``attack_direction``,
``attack_gamma``, ``attack_poisoned``, ``attack_harm`` in ``metrics.csv``). The oracle's kept mask for
the rows as sent is :attr:`prediction` (``oracle_agrees``) and its aggregate :attr:`predicted_update`
(``deviation_agrees``: the server's real aggregate equals it).
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fedml_heterofl.attack.adaptive import ORACLES, alg7_search, flipped_copies
from fedml_heterofl.attack.alie import z_max
from fedml_heterofl.attack.base import (OWN_DATA_STREAM, ModelAttack, attack_generator, check_choice, check_positive,
                                        reference_updates, register)
from fedml_heterofl.attack.gamma_search import perturbation
from fedml_heterofl.defense.base import Defense, RoundContext
from fedml_heterofl.defense.oracle import Oracle, OracleOutcome, known_pieces
from fedml_heterofl.defense.rows import poisoned_rows, row_scales

log = logging.getLogger(__name__)

HARMS = ("against", "distance", "loss")
DIRECTIONS = ("unit_vec", "std", "sign", "ipm", "alie")
#: the golden ratio's conjugate, (√5 − 1)/2
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class Family(NamedTuple):
    """One direction's candidates: its oracle, the f direction rows, the grid unit and anchor γs."""

    name: str
    oracle: Oracle
    directions: Tensor
    unit: float
    anchors: Tuple[float, ...]


class Choice(NamedTuple):
    """One evaluated candidate."""

    harm: float
    direction: str
    gamma: float
    poisoned: int
    outcome: OracleOutcome


def harm_of(outcome: OracleOutcome, measure: str, loss: Optional[Callable[[Tensor], float]] = None) -> float:
    """The harm ``measure`` of an oracle outcome (module doc); ``loss``: ``A -> ℓ(w_t + A)`` on the round's
    own samples, for ``measure == "loss"`` (the outcome then carries the aggregate)."""
    if measure == "loss":
        return loss(outcome.update)
    return outcome.against if measure == "against" else outcome.deviation


def golden_section(fn: Callable[[float], float], lo: float, hi: float, steps: int) -> None:
    """``steps`` evaluations of golden-section search for a maximum of ``fn`` on ``[lo, hi]`` (the
    caller records what ``fn`` saw and keeps the best; one step evaluates the midpoint)."""
    if steps == 1:
        fn((lo + hi) / 2)
        return
    a, b = lo, hi
    x1, x2 = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    f1, f2 = fn(x1), fn(x2)
    for _ in range(steps - 2):
        if f1 >= f2:  # a maximum lies in [a, x2]
            b, x2, f2 = x2, x1, f1
            x1 = b - GOLDEN * (b - a)
            f1 = fn(x1)
        else:  # in [x1, b]
            a, x1, f1 = x1, x2, f2
            x2 = a + GOLDEN * (b - a)
            f2 = fn(x2)


@register
class AdaptiveDeviation(ModelAttack):
    """Eq. (7) searched with the defense's exact oracle against any :class:`Defense` (module doc).

    Args:
        harm: ``against`` (default), ``distance`` or ``loss``.
        loss_samples: the attackers' own samples ``loss`` evaluates the candidates on each round (default 256).
        directions: a subset of ``unit_vec``, ``std``, ``sign``, ``ipm``, ``alie`` (default all).
        fractions: poisoned counts as fractions of f (default 1 and 1/4).
        grid: the exponents ``(lo, hi)`` of the coarse γ grid ``u·2^j`` (default ``(-2, 4)``: 7 points).
        refine: golden-section evaluations around the best interior grid point (default 4).
        mu: Eq. (8)'s fraction of flipped coordinates (default 0.1, as ``adaptive``).
        gamma_init, tau: Alg. 7's search (as ``adaptive``: 10, 1e-5).
        epsilon: IPM's ε whose update is an anchor of the ``ipm`` family (default 2, as ``ipm``).
        oracle: ``fast`` (default) or ``plain`` (the defense called on the materialised rows).

    Full knowledge only: the oracle must see the real round for the exactness columns to mean
    anything. Needs the server's defense.
    """

    name = "adaptive_deviation"

    def __init__(self, *, harm: str = "against", directions: Sequence[str] = DIRECTIONS,
                 fractions: Sequence[float] = (1.0, 0.25), grid: Sequence[int] = (-2, 4), refine: int = 4,
                 mu: float = 0.1, gamma_init: float = 10.0, tau: float = 1e-5, epsilon: float = 2.0,
                 oracle: str = "fast", loss_samples: int = 256) -> None:
        super().__init__()
        self.harm = check_choice("harm", harm, HARMS)
        if isinstance(loss_samples, bool) or not isinstance(loss_samples, int) or loss_samples < 1:
            raise ValueError(f"loss_samples must be an integer >= 1, got {loss_samples!r}")
        self.loss_samples = loss_samples
        self._loss: Optional[Callable[[Tensor], float]] = None
        self.directions = tuple(check_choice("directions", d, DIRECTIONS) for d in directions)
        if not self.directions:
            raise ValueError("directions must name at least one of " + ", ".join(DIRECTIONS))
        if not fractions or any(isinstance(x, bool) or not 0 < x <= 1 for x in fractions):
            raise ValueError(f"fractions must be numbers in (0, 1], got {fractions!r}")
        self.fractions = tuple(float(x) for x in fractions)
        if len(grid) != 2 or not all(isinstance(j, int) for j in grid) or grid[0] > grid[1]:
            raise ValueError(f"grid must be two integers lo <= hi, got {grid!r}")
        self.grid = (int(grid[0]), int(grid[1]))
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be an integer >= 0, got {refine!r}")
        self.refine = refine
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"mu must be a fraction in [0, 1], got {mu!r}")
        check_positive(gamma_init=gamma_init, tau=tau, epsilon=epsilon)
        self.mu, self.gamma_init, self.tau, self.epsilon = float(mu), float(gamma_init), float(tau), float(epsilon)
        self.oracle = check_choice("oracle", oracle, ORACLES)

    def counts(self, f: int) -> List[int]:
        """The poisoned counts tried for f attackers, largest first."""
        return sorted({min(f, max(1, round(x * f))) for x in self.fractions}, reverse=True)

    def family(self, name: str, benign: Tensor, mean: Tensor, f: int, ctx: RoundContext, defense: Defense,
               pieces: Tuple[Tuple[Optional[Tensor], Optional[Tensor]], Tensor, float]) -> Family:
        """The :class:`Family` of direction ``name``; ``pieces``: what the oracles share about the benign
        rows (:func:`~fedml_heterofl.defense.oracle.known_pieces`), ``−σ`` and ``‖σ‖``."""
        (gram, columns), std, spread = pieces
        anchors: Tuple[float, ...] = ()
        if name in ("unit_vec", "std", "sign"):  # Eq. (8)'s copies, the same flips as the paper's attack
            rows = flipped_copies(perturbation(benign, name), f, self.mu, attack_generator(ctx))
        elif name == "ipm":
            rows = perturbation(benign, "unit_vec").expand(f, -1).contiguous()
            anchors = ((1.0 + self.epsilon) * float(torch.linalg.vector_norm(mean.double())),)
        else:
            rows = std.expand(f, -1).contiguous()
            n = benign.shape[0] + f
            anchors = (z_max(n, f),) if 2 * f < n + 2 else ()  # ALIE's z_max is finite (alie.z_max)
        rows = rows.to(mean.dtype)
        norm = float(torch.linalg.vector_norm(rows[0].double()))
        unit = spread / norm if norm > 0 and spread > 0 else 1.0
        oracle = Oracle(defense, benign, mean, rows, ctx, plain=self.oracle == "plain", known_gram=gram,
                        known_sorted=columns)
        return Family(name, oracle, rows, unit, anchors)

    def evaluate(self, family: Family, gamma: float, poisoned: int, f: int, **kw: bool) -> Choice:
        """The oracle's outcome and harm for ``family`` at ``gamma`` with ``poisoned`` of f poisoned rows."""
        if self.harm == "loss":
            kw["aggregate"] = True
        out = family.oracle(row_scales(gamma, poisoned, f, family.directions.dtype), **kw)
        return Choice(harm_of(out, self.harm, self._loss), family.name, float(gamma), poisoned, out)

    def own_loss(self, ctx: RoundContext) -> Callable[[Tensor], float]:
        """``A -> ℓ(w_t + A)`` on ``loss_samples`` of :attr:`own_data`, drawn for this round (``harm: loss``);
        ``ValueError`` naming what is missing."""
        missing = [name for name, value in (("the attackers' own training samples (own_data)", self.own_data),
                                            ("the model's loss (ctx.loss_fn)", ctx.loss_fn),
                                            ("the global model (ctx.global_params)", ctx.global_params))
                   if value is None]
        if missing:
            raise ValueError(f"adaptive_deviation with harm 'loss' needs {' and '.join(missing)}; the standalone "
                             "and MPI runs provide them — elsewhere use harm 'against' or 'distance'")
        x, y = self.own_data
        pick = torch.randperm(len(y), generator=attack_generator(ctx, OWN_DATA_STREAM))[:self.loss_samples]
        batch = (x[pick.to(x.device)], y[pick.to(y.device)])
        w_t = ctx.global_params

        def loss(update: Tensor) -> float:
            return float(ctx.loss_fn((w_t + update.to(w_t.device, w_t.dtype))[None], batch)[0])

        return loss

    def search(self, family: Family, poisoned: int, f: int) -> Tuple[Choice, int]:
        """The best candidate of ``family`` with ``poisoned`` rows: the grid, then golden-section
        refinement around an interior best (module doc). Returns it and the evaluations made."""
        gammas = sorted({family.unit * 2.0 ** j for j in range(self.grid[0], self.grid[1] + 1)}
                        | (set(family.anchors) if poisoned == f else set()))
        tried = [self.evaluate(family, g, poisoned, f) for g in gammas]
        best = max(range(len(tried)), key=lambda i: tried[i].harm)
        calls = len(tried)
        if 0 < best < len(gammas) - 1 and self.refine > 0:
            found: List[Choice] = []

            def fn(gamma: float) -> float:
                found.append(self.evaluate(family, gamma, poisoned, f))
                return found[-1].harm

            golden_section(fn, gammas[best - 1], gammas[best + 1], self.refine)
            tried.extend(found)
            calls += len(found)
        return max(tried, key=lambda c: c.harm), calls

    def poison_updates(self, benign: Tensor, own: Tensor, ctx: RoundContext, defense: Optional[Defense]) -> Tensor:
        if defense is None:
            raise ValueError("the adaptive_deviation attack needs the server's defense as its oracle; got defense=None")
        f = own.shape[0]
        self._loss = self.own_loss(ctx) if self.harm == "loss" else None
        benign = reference_updates(benign, own, "full")
        mean = benign.mean(dim=0).to(own.dtype)
        std = perturbation(benign, "std")
        pieces = (known_pieces(defense, benign, plain=self.oracle == "plain"), std,
                  float(torch.linalg.vector_norm(std.double())))
        best: Optional[Tuple[Choice, Family]] = None
        paper: Optional[Tuple[Choice, Family]] = None
        calls = 0
        for name in self.directions:  # one family (one Gram basis) alive at a time, besides the best
            family = self.family(name, benign, mean, f, ctx, defense, pieces)
            if name == "std":  # the paper's attack (Alg. 7) on the same directions competes as sent
                gamma, n_calls, _, _ = alg7_search(family.oracle, f, self.gamma_init, self.tau)
                paper = (self.evaluate(family, gamma, f, f, rounded=True, aggregate=True), family)
                calls += n_calls + 1
            for k in self.counts(f):
                choice, n_calls = self.search(family, k, f)
                calls += n_calls
                if best is None or choice.harm > best[0].harm:
                    best = (choice, family)
        choice, family = best
        final = (self.evaluate(family, choice.gamma, choice.poisoned, f, rounded=True, aggregate=True), family)
        calls += 1
        if paper is not None and paper[0].harm > final[0].harm:
            final = paper
        (choice, family) = final
        log.debug("round %d: %s, gamma %.6g, %d of %d poisoned, predicted %s harm %.6g (%d oracle calls)",
                  ctx.round_idx, choice.direction, choice.gamma, choice.poisoned, f, self.harm, choice.harm, calls)
        self.prediction = choice.outcome.kept
        self.predicted_update = choice.outcome.update
        self.report.update(direction=choice.direction, gamma=choice.gamma, poisoned=choice.poisoned, harm=choice.harm,
                           deviation=choice.outcome.deviation, against=choice.outcome.against, oracle_calls=calls,
                           paper_gamma=paper[0].gamma if paper is not None else math.nan)
        return poisoned_rows(mean, family.directions, row_scales(choice.gamma, choice.poisoned, f, own.dtype))
