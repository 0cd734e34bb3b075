"""FedML's flat ``args`` namespace, read (and made) only here: the package's FedML edge.

FedML flattens every YAML section onto one ``args`` namespace; its processes (the MPI server and
workers, and FedML's own runners where a user names our defense or attack in a FedML YAML) hand us
nothing else. These readers take the keys below from ``args`` and call the same builders
(:mod:`fedml_heterofl.components`) as :class:`~fedml_heterofl.settings.Settings` does, so a configuration
gives the same defense, attack and attackers on both edges. :func:`fedml_args` makes the namespace from
our typed settings for FedML's launchers.

==========================  =====================================================================
``enable_defense``          false -> FedAvg (``fedavg``)
``defense_type``            a name in :data:`fedml_heterofl.defense.REGISTRY`
``defense_params``          mapping of the defense's keyword arguments (``f`` and run keys filled in
                            by :func:`~fedml_heterofl.components.build_run_defense`)
``enable_attack``           false -> no attackers (f = 0)
``attack_type``             a name in :data:`fedml_heterofl.attack.REGISTRY`
``attack_params``           mapping of the attack's keyword arguments; ``num_classes`` defaults to
                            ``num_classes``/``class_num`` for attacks that take it (label flip)
``byzantine_client_num``    f, the number of fixed attackers, and the number a defense guards against
``client_num_in_total``     N, clients are ``0..N-1``
``random_seed``             the run seed (attacker draw, every per-round generator)
``epochs``, ``batch_size``, ``learning_rate``, ``momentum`` (0), ``weight_decay`` (0),
``client_optimizer`` (``sgd``): local training
``round_idx``               the current round (FedML's server and client managers set it)
==========================  =====================================================================
"""
from __future__ import annotations

from argparse import Namespace
from typing import Any, Dict, Optional, Tuple

from fedml_heterofl import components
from fedml_heterofl.attack.base import choose_attackers
from fedml_heterofl.defense.base import Defense
from fedml_heterofl.settings import Settings


def fedml_args(settings: Settings) -> Namespace:
    """FedML's flat ``args`` namespace of ``settings`` (every key of every section, as FedML's loader makes
    it, plus ``num_classes``)."""
    return Namespace(**settings.flat(), num_classes=settings.num_classes, yaml_config_file="")


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
    return choose_attackers(int(getattr(args, "client_num_in_total", 0) or 0), attacker_count(args), _seed(args))


def _params(args: Any, key: str) -> Dict[str, Any]:
    value = getattr(args, key, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping of parameter names to values, got {value!r}")
    return dict(value)


def defense_name(args: Any) -> str:
    """The aggregation rule ``args`` name (:func:`~fedml_heterofl.components.defense_in_force`)."""
    return components.defense_in_force(getattr(args, "enable_defense", False), getattr(args, "defense_type", None))


def attack_name(args: Any) -> Optional[str]:
    """The attack ``args`` name, or ``None`` (:func:`~fedml_heterofl.components.attack_in_force`)."""
    return components.attack_in_force(getattr(args, "enable_attack", False), getattr(args, "attack_type", None))


def defense_from_args(args: Any) -> Defense:
    """The defense named by ``args`` with ``defense_params`` (with ``enable_defense`` false the rule is
    plain FedAvg: ``defense_params`` belong to the disabled rule)."""
    params = _params(args, "defense_params") if getattr(args, "enable_defense", False) else {}
    return components.build_run_defense(defense_name(args), params, byzantine_count(args),
                                        lambda key: getattr(args, key, None))


def attack_from_args(args: Any) -> Any:
    """The attack named by ``args`` with ``attack_params``; ``None`` without an attack."""
    name = attack_name(args)
    return None if name is None else components.build_run_attack(name, _params(args, "attack_params"),
                                                                 num_classes(args))


def num_classes(args: Any) -> Optional[int]:
    """L, the number of real classes: ``num_classes`` (ours), else FedML's ``class_num``; ``None`` when
    neither is set."""
    for key in ("num_classes", "class_num"):
        value = getattr(args, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sgd_settings(args: Any) -> Dict[str, Any]:
    """Keyword arguments of :func:`fedml_heterofl.simulation.local_training.local_sgd` from ``args``."""
    return components.sgd_keywords(getattr(args, "client_optimizer", "sgd"), args.epochs, args.batch_size,
                                   args.learning_rate, getattr(args, "momentum", 0.0),
                                   getattr(args, "weight_decay", 0.0))
