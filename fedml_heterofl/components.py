"""Build a run's defense, attack and local-training settings from plain, already-typed values.

Both edges of the package call these builders: :class:`fedml_heterofl.settings.Settings` (a typed run
spec, the standalone backend and our CLI) and :mod:`fedml_heterofl.fedml_bridge.args` (FedML's flat
``args`` namespace, read only there). So one configuration gives the same objects on every backend,
and a parameter is checked the same way whichever edge it came through:

* a defense's ``f`` (and Zeno's ``b``) default to the run's ``byzantine_client_num`` for rules that take
  them, with or without an attack (a server does not know whether it is attacked; FedML's defenders read
  it the same way), and the run keys a rule names in ``run_args`` (FedML's CRFL: ``comm_round``,
  ``dataset``) default to the run's values;
* an attack's ``num_classes`` is the dataset's number of classes (label flipping);
* a parameter the class does not take, or text where it takes a number, a flag or a list, is refused
  with the names it takes.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from fedml_heterofl.defense import build_defense
from fedml_heterofl.defense.base import REGISTRY as DEFENSES, Defense, RoundContext
from fedml_heterofl.yaml_input import number_hint

#: defense parameters that default to ``byzantine_client_num`` (Multi-Krum's and DnC's f, Zeno's b)
ATTACKER_COUNT_PARAMS = ("f", "b")


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
    or whose value is not of the kind of the parameter's default where that is a number, a flag or a list
    (text, a list for a number, a number for a list or a flag, a flag for a number)."""
    if cls is None:  # an unknown name: build_defense/build_attack say so with the allowed names
        return
    accepted = accepted_parameters(cls)
    defaults = {p.name: p.default for klass in reversed(cls.__mro__) if "__init__" in vars(klass)
                for p in inspect.signature(vars(klass)["__init__"]).parameters.values()}
    for key, value in params.items():
        if key not in accepted:
            raise ValueError(f"{name} has no parameter {key!r}; allowed: {', '.join(accepted) or 'none'}")
        types, kind = next(((types, kind) for types, kind in _KINDS if isinstance(defaults.get(key), types)),
                           (None, None))
        if kind is None:
            continue
        if isinstance(value, str):
            raise ValueError(f"{name} parameter {key!r}: expected {kind} (default {defaults[key]!r}), got the text "
                             f"{value!r}{number_hint(value)}")
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise ValueError(f"{name} parameter {key!r}: expected {kind} (default {defaults[key]!r}), got {value!r}")


def defense_in_force(enabled: bool, name: Any) -> str:
    """The aggregation rule in force: ``name`` (stripped, lower case), ``fedavg`` when not ``enabled``."""
    if not enabled:
        return "fedavg"
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"defense_type must be a defense name when enable_defense is true, got {name!r}")
    return name.strip().lower()


def attack_in_force(enabled: bool, name: Any) -> Optional[str]:
    """The attack in force (stripped, lower case), or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"attack_type must be an attack name when enable_attack is true, got {name!r}")
    return name.strip().lower()


def build_run_defense(name: str, params: Mapping[str, Any], f: int, run_value: Callable[[str], Any]) -> Defense:
    """The defense ``name`` with ``params``; ``f``/``b`` and the rule's ``run_args`` (``run_value(key)``, the
    run's value of a key, ``None`` when unset) filled in (module doc)."""
    params = dict(params)
    cls = DEFENSES.get(name)
    accepted = inspect.signature(cls.__init__).parameters if cls is not None else {}
    for key in ATTACKER_COUNT_PARAMS:
        if key in accepted and key not in params:
            params[key] = f
    for key in getattr(cls, "run_args", ()):  # e.g. FedML's CRFL reads the run's comm_round and dataset
        if key in accepted and key not in params and run_value(key) is not None:
            params[key] = run_value(key)
    _check_parameters(name, cls, params)
    return build_defense(name, **params)


def build_run_attack(name: Optional[str], params: Mapping[str, Any], num_classes: Optional[int]) -> Any:
    """The attack ``name`` with ``params`` (``num_classes`` filled in, module doc); ``None`` without one.
    ``num_classes`` may be ``None`` where the edge does not know it: an attack that takes it then fails."""
    from fedml_heterofl.attack import REGISTRY as ATTACKS, build_attack

    if name is None:
        return None
    params = dict(params)
    cls = ATTACKS.get(name)
    _check_parameters(name, cls, params)
    if cls is not None and "num_classes" in inspect.signature(cls.__init__).parameters:
        if num_classes is None:
            raise ValueError("the number of classes is unknown: set data_args.num_classes (or FedML's class_num)")
        if params.setdefault("num_classes", num_classes) != num_classes:
            raise ValueError(f"num_classes is the dataset's number of classes, {num_classes}; got "
                             f"{params['num_classes']!r} (leave it out)")
    return build_attack(name, **params)


#: coordinates of the synthetic updates of :func:`dry_round`
DRY_ROUND_D = 8


def dry_round(defense: Defense, attack: Any, n: int, total: int, f: int) -> None:
    """Run ``attack`` (when it is a model attack) and ``defense`` on synthetic updates of the run's shape:
    ``n`` (clients per round) seeded random rows of :data:`DRY_ROUND_D` coordinates, with a stand-in for
    every context field a rule reads (a quadratic loss, one-sample trigger and validation sets, a random
    server update) and for the attackers' own samples, once for the fewest and once for the most attackers
    a round can hold (all f with every one of the ``total`` clients taking part; with a sampled subset,
    ``max(1, f - (total - n))`` to ``min(f, n)``). A rule or attack that cannot work with the run's n and f
    (Multi-Krum's n >= 2f + 3, Zeno's b < n, DnC's c·f < n, an oracle on the attackers' own rows under partial
    knowledge, ...) raises its own ``ValueError`` here, at start-up, instead of after the data is loaded and a
    round is trained."""
    from fedml_heterofl.attack import ModelAttack
    from fedml_heterofl.attack.base import apply_model_attack

    d = DRY_ROUND_D
    generator = torch.Generator().manual_seed(0)
    sample = (torch.zeros(1, d), torch.zeros(1, dtype=torch.long))
    ctx = RoundContext(global_params=torch.zeros(d), client_ids=torch.arange(n), sample_counts=torch.ones(n),
                       loss_fn=lambda params, batch: params.square().mean(dim=1), trigger_set=sample,
                       validation_batch=sample, server_update=torch.randn(d, generator=generator))
    updates = torch.randn(n, d, generator=generator)
    if isinstance(attack, ModelAttack) and attack.own_data is None:
        attack.own_data = sample  # the attackers' own samples (a stand-in, as the context's)
    for attackers in sorted({min(f, n), max(1, f - (total - n))} if f and n < total else {min(f, n)}):
        poisoned = updates
        if isinstance(attack, ModelAttack) and attackers > 0:
            poisoned = apply_model_attack(attack, updates, torch.arange(n) < attackers, ctx, defense).updates
        defense(poisoned, ctx)


def sgd_keywords(optimizer: Any, epochs: Any, batch_size: Any, learning_rate: Any, momentum: Any = 0.0,
                 weight_decay: Any = 0.0) -> Dict[str, Any]:
    """Keyword arguments of :func:`fedml_heterofl.simulation.local_training.local_sgd`: the clients'
    optimizer (only ``sgd``), epochs, batch size, learning rate, momentum and weight decay (``None``: 0)."""
    optimizer = str(optimizer or "sgd").lower()
    if optimizer != "sgd":
        raise ValueError(f"client_optimizer: {optimizer!r} is not supported; allowed: sgd")
    out = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(learning_rate),
        "momentum": float(momentum or 0.0),
        "weight_decay": float(weight_decay or 0.0),
    }
    if out["epochs"] < 1 or out["batch_size"] < 1 or out["lr"] <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and learning_rate > 0, got {out}")
    return out
