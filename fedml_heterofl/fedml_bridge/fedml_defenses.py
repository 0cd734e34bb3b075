"""FedML 0.9.6's own defenses as our rules: ``defense_type: fedml:<name>`` runs FedML's implementation
inside our rounds (standalone or MPI), beside ours, with the same attacks and metrics.

For every ``defense_type`` that FedML's ``FedMLDefender.init`` accepts (:data:`FEDML_DEFENSES`), a
:class:`FedMLDefense` subclass named ``fedml:<name>`` is registered lazily in
:data:`fedml_heterofl.defense.REGISTRY` (this module is imported on the first lookup of a ``fedml:``
name; the ``defense`` package itself never imports FedML). One call:

1. converts the stacked updates ``U`` (n, d) to FedML's list ``[(sample_num, state_dict of w_t + g_i)]``
   (FedML's defenses see full weights), split into the model's tensors by
   ``ctx.param_layout`` (:class:`~fedml_heterofl.models.ParamLayout`; without one, the flat vector is
   presented as one linear layer's ``weight`` (1, d − 1) and ``bias`` (1,)), and ``w_t`` likewise;
2. runs FedML's own ``FedMLDefender`` dispatch, as ``ServerAggregator`` does (FedML 0.9.6 ``core/alg_frame/server_aggregator.py``):
   ``defend_before_aggregation`` (with the global model), ``defend_on_aggregation`` with FedML's
   ``FedMLAggOperator.agg`` as the base aggregation, ``defend_after_aggregation`` — the FedML class and
   its phases are FedML's (``FedMLDefender.init`` unwrapped from our registration shim, so
   ``fedml:multikrum`` is FedML's ``KrumDefense``, not our Multi-Krum);
3. converts the aggregate back to the update ``w' − w_t``.

Kept rows: the entries whose ``state_dict`` object survives the before-phase (Krum's selection); when
the before-phase returns new objects for all n entries (clipping, reweighting) every row is kept.

Order: FedML's rules read the list's order (its trimmed mean breaks ties in sample counts by position,
its sums add the entries in order), so the list is always in ascending client id, whatever the rows'
order: a permutation of the rows then permutes the kept rows and leaves the aggregate bit for bit the
same — the contract of our own rules, on which the adaptive attacks' oracle relies (it calls the rule
on ``cat(benign, own)``, the server on the round's order).

Randomness: FedML draws from the global ``random``, ``numpy.random`` and ``torch`` generators (CClip's
initial guess, CRFL's and weak DP's noise); each call seeds all three from the round's generator and
restores them afterwards. FedML's ``print`` output goes to this module's debug log.

State across rounds: several FedML defenses keep state (FoolsGold's memory, the 3-sigma rules'
averages, CRFL's epoch). Every call of round t starts from the state after the *last* call of round
t − 1 (the server's), so the adaptive attack's oracle, which calls the rule many times per round,
does not advance it.

FedML's parameters keep FedML's names (``krum_param_m``, ``beta``, ``tau``, ``bucket_size``, ...) in
``defense_params``; ``f`` is FedML's ``byzantine_client_num`` (the run's, with or without an attack)
and ``client_num_per_round`` is the round's n; CRFL's ``comm_round`` and ``dataset`` default to the run's.
A parameter left out is not set: FedML's own default applies, or FedML's error, which is reported
naming the parameter.

FedML defenses that FedML itself breaks on an ordinary round (an error, or a non-finite aggregate) are
listed in :data:`BROKEN` (checked by ``tests/test_fedml_defenses.py``); those that do nothing in the
``ServerAggregator`` lifecycle in :data:`NO_OP`, those that silently aggregate wrongly in :data:`WRONG`.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fedml.core.security.fedml_defender import FedMLDefender
from fedml.ml.aggregator.agg_operator import FedMLAggOperator
from torch import Tensor

from fedml_heterofl.defense.base import REGISTRY, Defense, RoundContext, Selection, timed

log = logging.getLogger(__name__)

#: prefix of FedML's defenses in our registry
PREFIX = "fedml:"

#: every ``defense_type`` FedML 0.9.6's ``FedMLDefender.init`` accepts -> the config keys its class
#: reads (from FedML's source), which become the rule's parameters. ``f`` is ``byzantine_client_num``.
FEDML_DEFENSES: Dict[str, Tuple[str, ...]] = {
    "krum": ("f", "krum_param_m"),
    "multikrum": ("f", "krum_param_m"),
    "norm_diff_clipping": ("norm_bound",),
    "robust_learning_rate": ("robust_threshold",),
    "slsgd": ("trim_param_b", "alpha", "option_type"),
    "geo_median": ("f", "batch_num"),
    "weak_dp": ("stddev",),
    "cclip": ("tau", "bucket_size"),
    "wise_median": (),
    "rfa": (),
    "foolsgold": (),
    "3sigma_foolsgold": ("bucketing_batch_size", "pretraining_round_num", "to_keep_higher_scores"),
    "3sigma_geo": ("pretraining_round_num", "to_keep_higher_scores"),
    "3sigma": (),
    "crfl": ("clip_threshold", "sigma", "comm_round", "dataset"),
    "trimmed_mean": ("beta",),
    "anomaly_detection": ("cosine_similarity_bound",),
}

#: FedML defenses that FedML 0.9.6 itself breaks on an ordinary round (10 clients, a small model,
#: parameters as in :data:`EXAMPLE_PARAMS`) -> what happens. ``tests/test_fedml_defenses.py`` runs
#: every FedML defense and asserts that exactly these fail (an error, or a non-finite aggregate).
BROKEN: Dict[str, str] = {
    "3sigma_geo": "AttributeError in FedML's own code: ThreeSigmaGeoMedianDefense passes numpy feature "
                  "vectors to compute_geometric_median, which calls torch's .float() on them "
                  "('numpy.ndarray' object has no attribute 'float')",
}

#: FedML defenses that run but do not compute the rule they are named after (checked by the test):
#: RFA's and geo_median's client weights are built with a *set* comprehension, so equal sample counts
#: collapse into one weight and ``zip`` keeps only the first model; trimmed_mean trims by sample count.
WRONG: Dict[str, str] = {
    "rfa": "with equal sample counts the geometric median is the first client's model (set of weights)",
    "geo_median": "with equal batch sample counts the geometric median is the first batch's mean (set of weights)",
    "trimmed_mean": "not coordinate-wise: drops the β·n clients with the lowest and the β·n with the highest "
                    "*sample counts* (utils.trimmed_mean scores clients by sample count), then FedAvg",
}

#: FedML defenses with no phase in FedML's ServerAggregator lifecycle (only a legacy ``run`` that
#: FedMLDefender.defend calls): through ``fedml:<name>`` they aggregate as FedML's FedAvg.
NO_OP: Dict[str, str] = {
    "robust_learning_rate": "only RobustLearningRateDefense.run (the legacy path); no lifecycle phase",
    "weak_dp": "only WeakDPDefense.run (the legacy path); no lifecycle phase",
}

#: parameters that make every FedML defense run on a small round (tests, the CLI's examples)
EXAMPLE_PARAMS: Dict[str, Dict[str, Any]] = {
    "krum": {"krum_param_m": 1}, "multikrum": {"krum_param_m": 3}, "norm_diff_clipping": {"norm_bound": 1.0},
    "robust_learning_rate": {"robust_threshold": 4}, "slsgd": {"trim_param_b": 1, "alpha": 0.5, "option_type": 2},
    "geo_median": {"batch_num": 5}, "weak_dp": {"stddev": 0.01}, "cclip": {"tau": 10.0, "bucket_size": 2},
    "3sigma_foolsgold": {}, "3sigma_geo": {}, "crfl": {"clip_threshold": 10.0, "comm_round": 50, "dataset": "mnist"},
    "trimmed_mean": {"beta": 0.2}, "anomaly_detection": {"cosine_similarity_bound": 0.5},
}


class FedMLDefenseError(ValueError):
    """FedML's defense failed, or returned something that is not an aggregate (a ``ValueError``, so a
    start-up dry round reports it as a configuration problem)."""


@dataclass
class FedMLSelection(Selection):
    """A selection that carries FedML's aggregate (FedML decides and aggregates in one pass)."""

    aggregate: Optional[Tensor] = None


def _split(flat: Tensor, layout: Any) -> "OrderedDict[str, Tensor]":
    """A ``state_dict`` of views of ``flat`` (d,) by the layout's names and shapes."""
    chunks = torch.split(flat, list(layout.numels))
    return OrderedDict((n, c.reshape(s)) for n, c, s in zip(layout.names, chunks, layout.shapes))


def flat_layout(d: int) -> SimpleNamespace:
    """The stand-in layout without a model: one linear layer's ``weight`` (1, d − 1) and ``bias`` (1,)
    (FoolsGold and the 3-sigma rules read the second-to-last entry as the last layer's weights)."""
    if d < 2:
        return SimpleNamespace(names=["weight"], shapes=[torch.Size([d])], numels=[d])
    return SimpleNamespace(names=["linear.weight", "linear.bias"], shapes=[torch.Size([1, d - 1]), torch.Size([1])],
                           numels=[d - 1, 1])


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and ``torch`` with ``seed`` for the block; restore them after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class FedMLDefense(Defense):
    """FedML's defense ``fedml_type`` as one of our rules (module doc). Subclasses per name are made by
    :func:`register_fedml_defenses`; their keyword parameters are :data:`FEDML_DEFENSES`' keys."""

    fedml_type: str = ""
    min_updates = 1
    honest_majority = False
    #: parameters that default to the run's value of the same FedML key (components.build_run_defense)
    run_args = ("comm_round", "dataset")

    def __init__(self, **params: Any) -> None:
        allowed = FEDML_DEFENSES[self.fedml_type]
        for key in params:
            if key not in allowed:
                raise ValueError(f"{self.name} has no parameter {key!r}; allowed: {', '.join(allowed) or 'none'}")
        f = params.get("f")
        if f is not None and (isinstance(f, bool) or not isinstance(f, int) or f < 0):
            raise ValueError(f"f must be an int >= 0 (FedML's byzantine_client_num), got {f!r}")
        self.params = {k: v for k, v in params.items() if v is not None}
        self._holder: Optional[FedMLDefender] = None
        self._n: Optional[int] = None
        #: round index -> FedML's defender as it was before that round (after round t − 1's last call)
        self._before: Dict[int, FedMLDefender] = {}

    @property
    def requires(self) -> Tuple[str, ...]:
        return ("param_layout",)

    def config(self, n: int) -> SimpleNamespace:
        """FedML's flat ``args`` for this defense on a round of ``n`` updates."""
        cfg = SimpleNamespace(enable_defense=True, defense_type=self.fedml_type, client_num_per_round=n,
                              federated_optimizer="FedAvg", training_type="simulation", backend="sp",
                              using_gpu=False, device_type="cpu", gpu_id=0)
        for key, value in self.params.items():
            setattr(cfg, "byzantine_client_num" if key == "f" else key, value)
        return cfg

    def _build(self, n: int) -> FedMLDefender:
        holder = FedMLDefender()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                inspect.unwrap(FedMLDefender.init)(holder, self.config(n))  # FedML's own chain, not our shim
        except AttributeError as exc:
            key = getattr(exc, "name", None) or str(exc)
            raise FedMLDefenseError(f"{self.name}: FedML's defense needs the parameter {key!r} in defense_params "
                                    f"(allowed: {', '.join(FEDML_DEFENSES[self.fedml_type])})") from exc
        except Exception as exc:  # FedML raises bare Exceptions and asserts
            raise FedMLDefenseError(f"{self.name}: FedML could not build the defense: {type(exc).__name__}: {exc}") \
                from exc
        return holder

    def _defender_for(self, round_idx: int, n: int) -> FedMLDefender:
        """A private copy of FedML's defender as it was before round ``round_idx`` (module doc)."""
        if self._holder is None or self._n != n:
            if self._holder is not None:
                log.info("%s: the round has n=%d updates (was %d); FedML's defense is built anew", self.name, n,
                         self._n)
            self._holder, self._n, self._before = self._build(n), n, {}
        if round_idx not in self._before:
            self._before = {round_idx: copy.deepcopy(self._holder)}
        return copy.deepcopy(self._before[round_idx])

    def select(self, updates: Tensor, ctx: RoundContext) -> Selection:
        n, d = updates.shape
        layout = ctx.param_layout if ctx.param_layout is not None else flat_layout(d)
        if sum(layout.numels) != d:
            raise ValueError(f"param_layout has {sum(layout.numels)} parameters, the updates have d={d}")
        w_t = ctx.global_params.to(updates) if ctx.global_params is not None else torch.zeros_like(updates[0])
        counts = ctx.sample_counts.tolist() if ctx.sample_counts is not None else [1.0] * n
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        diagnostics: Dict[str, object] = {"fedml_type": self.fedml_type}
        holder = self._defender_for(ctx.round_idx, n)
        order = torch.argsort(ctx.ids(n), stable=True)  # FedML's list in client id order (module doc)
        with timed(diagnostics, "fedml"):
            weights = w_t + updates.detach().cpu()
            models = [(float(counts[i]), _split(weights[i], layout)) for i in order.tolist()]  # FedML's format
            global_state = _split(w_t.detach().cpu().clone(), layout)
            kept_in_order, state = self._run_fedml(holder, models, global_state, seed)
        kept = torch.empty_like(kept_in_order)
        kept[order] = kept_in_order
        aggregate = _flatten(state, layout, self.name) - w_t.cpu()
        if not bool(torch.isfinite(aggregate).all()):
            raise FedMLDefenseError(f"{self.name}: FedML's defense returned a non-finite aggregate")
        self._holder = holder  # the last call of the round is the server's: the next round starts here
        removed = (~kept).nonzero().flatten()
        return FedMLSelection(kept, {"fedml": removed} if removed.numel() else {}, {}, diagnostics, None,
                              aggregate.to(updates))

    def _run_fedml(self, holder: FedMLDefender, models: List[Tuple[float, Any]], global_state: Any,
                   seed: int) -> Tuple[Tensor, Any]:
        n = len(models)
        out = io.StringIO()
        try:
            with seeded_global_rngs(seed), contextlib.redirect_stdout(out), torch.no_grad():
                before = holder.defend_before_aggregation(list(models), extra_auxiliary_info=global_state)
                state = holder.defend_on_aggregation(list(before), base_aggregation_func=FedMLAggOperator.agg,
                                                     extra_auxiliary_info=global_state)
                state = holder.defend_after_aggregation(state)
                malicious = list(holder.get_malicious_client_idxs() or [])
        except FedMLDefenseError:
            raise
        except Exception as exc:
            raise FedMLDefenseError(f"{self.name}: FedML's defense failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if out.getvalue():
                log.debug("%s printed: %s", self.name, out.getvalue().strip())
        kept = _kept(models, before, malicious, n)
        return kept, state

    def combine(self, updates: Tensor, selection: Selection, ctx: RoundContext) -> Tensor:
        if not isinstance(selection, FedMLSelection) or selection.aggregate is None:
            raise ValueError(f"{self.name}: combine() needs the selection its select() returned")
        return selection.aggregate.to(device=updates.device, dtype=updates.dtype)


def _kept(models: Sequence[Tuple[float, Any]], before: Sequence[Tuple[float, Any]], malicious: Sequence[int],
          n: int) -> Tensor:
    """Which entries survived FedML's before-phase (module doc)."""
    position = {id(state): i for i, (_, state) in enumerate(models)}
    survivors = [position[id(entry[1])] for entry in before if id(entry[1]) in position]
    kept = torch.zeros(n, dtype=torch.bool)
    if survivors:
        kept[torch.tensor(survivors)] = True
    elif len(before) == n:
        kept[:] = True
    else:
        kept[:] = True
        kept[[i for i in malicious if 0 <= int(i) < n]] = False
    return kept


def _flatten(state: Any, layout: Any, name: str) -> Tensor:
    """FedML's aggregate ``state_dict`` as a flat float32 vector in the layout's order."""
    try:
        parts = [torch.as_tensor(state[k]).detach().reshape(-1).to(torch.float32).cpu() for k in layout.names]
    except (KeyError, TypeError) as exc:
        raise FedMLDefenseError(f"{name}: FedML's defense returned no model state_dict ({type(exc).__name__}: "
                                f"{exc})") from exc
    return torch.cat(parts)


def _signature(keys: Sequence[str]) -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in keys]
    return inspect.Signature(params)


def register_fedml_defenses() -> Dict[str, type]:
    """Register ``fedml:<name>`` for every :data:`FEDML_DEFENSES` name (idempotent); returns them. This
    module provides the family itself, so it registers however it was first imported."""
    REGISTRY.provide(PREFIX, __name__)
    out = {}
    for fedml_type, keys in FEDML_DEFENSES.items():
        name = PREFIX + fedml_type
        cls = REGISTRY.lazy(name)
        if cls is None:
            def __init__(self: FedMLDefense, **params: Any) -> None:
                FedMLDefense.__init__(self, **params)

            __init__.__signature__ = _signature(keys)  # what components.accepted_parameters reads
            doc = (f"FedML 0.9.6's ``{fedml_type}`` defense through FedML's own FedMLDefender "
                   f"(:mod:`{__name__}`); parameters: {', '.join(keys) or 'none'}.")
            cls = type(f"FedML_{fedml_type}", (FedMLDefense,),
                       {"name": name, "fedml_type": fedml_type, "__init__": __init__, "__doc__": doc})
            REGISTRY.register_lazy(cls)
        out[name] = cls
    return out


register_fedml_defenses()
