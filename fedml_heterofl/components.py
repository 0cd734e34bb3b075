"""FedML's flat ``args`` -> our defense, attack, fixed attackers and local-training settings.

Keys read (FedML's names, flattened from any YAML section):

==========================  =====================================================================
``enable_defense``          false -> FedAvg (``fedavg``)
``defense_type``            a name in :data:`fedml_heterofl.defense.REGISTRY`
``defense_params``          mapping of the defense's keyword arguments; ``f`` (and Zeno's ``b``)
                            default to ``byzantine_client_num`` for rules that take them, with
                            or without an attack (a server does not know whether it is
                            attacked; FedML's defenders read it the same way), and the
                            run keys a rule names in ``run_args`` (FedML's CRFL: ``comm_round``,
                            ``dataset``) to the run's values
``enable_attack``           false -> no attackers (f = 0)
``attack_type``             a name in :data:`fedml_heterofl.attack.REGISTRY`
``attack_params``           mapping of the attack's keyword arguments; ``num_classes`` defaults
                            to ``num_classes``/``class_num`` for attacks that take it (label flip)
``byzantine_client_num``    f, the number of fixed attackers, and the number a defense guards against
``client_num_in_total``     N, clients are ``0..N-1``
``random_seed``             the run seed (attacker draw, every per-round generator)
``epochs``, ``batch_size``, ``learning_rate``, ``momentum`` (0), ``weight_decay`` (0),
``client_optimizer`` (``sgd``): local training
``round_idx``               the current round (FedML's server and client managers set it)
==========================  =====================================================================
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch

from fedml_heterofl.defense import build_defense
from fedml_heterofl.defense.base import REGISTRY as DEFENSES, Defense, RoundContext
from fedml_heterofl.yaml_input import number_hint

#: defense parameters that default to ``byzantine_client_num`` (Multi-Krum's and DnC's f, Zeno's b)
ATTACKER_COUNT_PARAMS = ("f", "b")

# FedML 0.9.6's own defenses, ``defense_type: fedml:<name>``: the module named here (it imports FedML)
# registers them on the first lookup of such a name. Provided here because every path from a
# configuration to a defense imports this module first: settings (the standalone and the MPI run,
# grids), fedml_bridge (FedML's own processes) and ``fedml-heterofl defenses``.
DEFENSES.provide("fedml:", "fedml_heterofl.fedml_bridge.fedml_defenses")


def _seed(args: Any) -> int:
    return int(getattr(args, "random_seed", 0) or 0)


def round_index(args: Any) -> int:
    """``args.round_idx`` (0 before FedML sets it)."""
    return int(getattr(args, "round_idx", 0) or 0)


def byzantine_count(args: Any) -> int:
    """f as the defense sees it: ``byzantine_client_num`` (0 when unset), whether or not an attack is
    enabled, so a rule aggregates the same way in a run with and without attackers."""
    f = getattr(args, "byzantine_client_num", None)
    if f is None:
        return 0
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"byzantine_client_num must be an integer >= 0, got {f!r}")
    return f


def attacker_count(args: Any) -> int:
    """The number of malicious clients: :func:`byzantine_count` when ``enable_attack`` is true (it must
    then be set), else 0."""
    if not getattr(args, "enable_attack", False):
        return 0
    if getattr(args, "byzantine_client_num", None) is None:
        raise ValueError("byzantine_client_num must be an integer >= 0 when enable_attack is true, got None")
    return byzantine_count(args)


def malicious_client_ids(args: Any) -> Tuple[int, ...]:
    """The f fixed attackers of the run (:func:`~fedml_heterofl.attack.choose_attackers` seeded by
    ``random_seed``): the same ids in every process and on every backend, never re-drawn."""
    from fedml_heterofl.attack import choose_attackers

    return choose_attackers(int(getattr(args, "client_num_in_total", 0) or 0), attacker_count(args), _seed(args))


def _params(args: Any, key: str) -> Dict[str, Any]:
    value = getattr(args, key, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping of parameter names to values, got {value!r}")
    return dict(value)


def accepted_parameters(cls: type) -> Tuple[str, ...]:
    """The keyword arguments ``cls(...)`` takes: the named parameters of its ``__init__`` and, when that
    passes ``**kwargs`` on, of the base classes' (e.g. Min-Sum's ``bound`` and the Min-Max template's)."""
    names: List[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]  # without self
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(names)


#: what a parameter takes, by the type of its default (text given where these are expected is refused)
_KINDS = ((bool, "true or false"), ((int, float), "a number"), ((tuple, list), "a list, e.g. [1, 2]"))


def _check_parameters(name: str, cls: Optional[type], params: Dict[str, Any]) -> None:
    """``ValueError`` naming the first key of ``params`` that ``cls`` does not take, and those it takes,
    or that is text where the parameter's default is a number, a flag or a list."""
    if cls is None:  # an unknown name: build_defense/build_attack say so with the allowed names
        return
    accepted = accepted_parameters(cls)
    defaults = {p.name: p.default for klass in reversed(cls.__mro__) if "__init__" in vars(klass)
                for p in inspect.signature(vars(klass)["__init__"]).parameters.values()}
    for key, value in params.items():
        if key not in accepted:
            raise ValueError(f"{name} has no parameter {key!r}; allowed: {', '.join(accepted) or 'none'}")
        kind = next((kind for types, kind in _KINDS if isinstance(defaults.get(key), types)), None)
        if isinstance(value, str) and kind is not None:
            raise ValueError(f"{name} parameter {key!r}: expected {kind} (default {defaults[key]!r}), got the text "
                             f"{value!r}{number_hint(value)}")


def defense_name(args: Any) -> str:
    """The aggregation rule in force: ``defense_type`` (stripped, lower case), ``fedavg`` when disabled."""
    if not getattr(args, "enable_defense", False):
        return "fedavg"
    name = getattr(args, "defense_type", None)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"defense_type must be a defense name when enable_defense is true, got {name!r}")
    return name.strip().lower()


def attack_name(args: Any) -> Optional[str]:
    """The attack in force (stripped, lower case), or ``None`` when ``enable_attack`` is false."""
    if not getattr(args, "enable_attack", False):
        return None
    name = getattr(args, "attack_type", None)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"attack_type must be an attack name when enable_attack is true, got {name!r}")
    return name.strip().lower()


def defense_from_args(args: Any) -> Defense:
    """Build the defense named by ``args`` with ``defense_params`` (``f`` filled in, see module doc)."""
    name = defense_name(args)
    # with enable_defense false the rule is plain FedAvg; defense_params belong to the disabled rule
    params = _params(args, "defense_params") if getattr(args, "enable_defense", False) else {}
    cls = DEFENSES.get(name)
    accepted = inspect.signature(cls.__init__).parameters if cls is not None else {}
    for key in ATTACKER_COUNT_PARAMS:
        if key in accepted and key not in params:
            params[key] = byzantine_count(args)
    for key in getattr(cls, "run_args", ()):  # e.g. FedML's CRFL reads the run's comm_round and dataset
        if key in accepted and key not in params and getattr(args, key, None) is not None:
            params[key] = getattr(args, key)
    _check_parameters(name, cls, params)
    return build_defense(name, **params)


def attack_from_args(args: Any) -> Any:
    """Build the attack named by ``args`` with ``attack_params``; ``None`` without an attack."""
    from fedml_heterofl.attack import REGISTRY as ATTACKS, build_attack

    name = attack_name(args)
    if name is None:
        return None
    params = _params(args, "attack_params")
    cls = ATTACKS.get(name)
    _check_parameters(name, cls, params)
    if cls is not None and "num_classes" in inspect.signature(cls.__init__).parameters:
        if params.setdefault("num_classes", num_classes(args)) != num_classes(args):
            raise ValueError(f"num_classes is the dataset's number of classes, {num_classes(args)}; got "
                             f"{params['num_classes']!r} (leave it out)")
    return build_attack(name, **params)


#: coordinates of the synthetic updates of :func:`dry_round`
DRY_ROUND_D = 8


def dry_round(args: Any) -> None:
    """Run the configured model attack and defense on synthetic updates of the run's shape:
    ``client_num_per_round`` seeded random rows of :data:`DRY_ROUND_D` coordinates, with a stand-in for
    every context field a rule reads (a quadratic loss, one-sample trigger and validation sets, a random
    server update), once for the fewest and once for the most attackers a round can hold (all f with
    every client taking part; with a sampled subset, ``max(1, f - (N - n))`` to ``min(f, n)``). A rule
    or attack that cannot work with the run's n and f (Multi-Krum's n >= 2f + 3, Zeno's b < n, DnC's
    c·f < n, an oracle on the attackers' own rows under partial knowledge, ...) raises its own
    ``ValueError`` here, at start-up, instead of after the data is loaded and a round is trained."""
    from fedml_heterofl.attack import ModelAttack
    from fedml_heterofl.attack.base import apply_model_attack

    n, total, f, d = int(args.client_num_per_round), int(args.client_num_in_total), attacker_count(args), DRY_ROUND_D
    generator = torch.Generator().manual_seed(0)
    sample = (torch.zeros(1, d), torch.zeros(1, dtype=torch.long))
    ctx = RoundContext(global_params=torch.zeros(d), client_ids=torch.arange(n), sample_counts=torch.ones(n),
                       loss_fn=lambda params, batch: params.square().mean(dim=1), trigger_set=sample,
                       validation_batch=sample, server_update=torch.randn(d, generator=generator))
    updates = torch.randn(n, d, generator=generator)
    defense, attack = defense_from_args(args), attack_from_args(args)
    for attackers in sorted({min(f, n), max(1, f - (total - n))} if f and n < total else {min(f, n)}):
        poisoned = updates
        if isinstance(attack, ModelAttack) and attackers > 0:
            poisoned = apply_model_attack(attack, updates, torch.arange(n) < attackers, ctx, defense).updates
        defense(poisoned, ctx)


def num_classes(args: Any) -> int:
    """L, the number of real classes: ``num_classes`` (ours), else FedML's ``class_num``."""
    for key in ("num_classes", "class_num"):
        value = getattr(args, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ValueError("the number of classes is unknown: set data_args.num_classes (or FedML's class_num)")


def sgd_settings(args: Any) -> Dict[str, Any]:
    """Keyword arguments of :func:`fedml_heterofl.simulation.local_training.local_sgd` from ``args``."""
    optimizer = str(getattr(args, "client_optimizer", "sgd") or "sgd").lower()
    if optimizer != "sgd":
        raise ValueError(f"client_optimizer: {optimizer!r} is not supported; allowed: sgd")
    out = {
        "epochs": int(args.epochs),
        "batch_size": int(args.batch_size),
        "lr": float(args.learning_rate),
        "momentum": float(getattr(args, "momentum", 0.0) or 0.0),
        "weight_decay": float(getattr(args, "weight_decay", 0.0) or 0.0),
    }
    if out["epochs"] < 1 or out["batch_size"] < 1 or out["lr"] <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and learning_rate > 0, got {out}")
    return out
