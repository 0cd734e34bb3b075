"""Make FedML's ``FedMLDefender`` / ``FedMLAttacker`` accept our defense and attack names.

FedML 0.9.6 picks its defense and attack in closed ``if/elif`` chains (``FedMLDefender.init`` raises
for an unknown ``defense_type``; ``FedMLAttacker.init`` silently leaves no attacker) and lists the
phases of each defense in hard-coded name lists (FedML 0.9.6
``core/security/fedml_defender.py`` and ``fedml_attacker.py``). :func:`register_with_fedml`
wraps — never edits — these methods on the two classes:

* ``init(args)``: when ``enable_defense``/``enable_attack`` is true and the name is in our registry
  (:data:`fedml_heterofl.defense.REGISTRY`, :data:`fedml_heterofl.attack.REGISTRY`; looked up at
  ``init`` time, so every registered rule and attack is accepted), the singleton gets a
  :class:`~.adapters.DefenseAdapter` / :class:`~.adapters.AttackAdapter`; any other name goes to
  FedML's own ``init`` unchanged, so its built-ins (``krum``, ``byzantine``, ...) work as before.
* ``is_defense_before_aggregation`` / ``is_defense_on_aggregation``: both true for our defenses
  (select before, aggregate on); FedML's lists otherwise.
* ``is_model_attack`` / ``is_data_poisoning_attack``: by the kind of our attack; FedML's lists otherwise.

Name clash: FedML maps ``multikrum`` (and ``krum``) to its ``KrumDefense``. Our registry also has
``multikrum`` (the paper's Multi-Krum baseline) and **ours wins** for ``defense_type: multikrum``;
FedML's ``KrumDefense`` stays reachable as ``defense_type: krum`` (with ``krum_param_m`` for its
multi-Krum), which is the same class FedML would have used.

Our attacks always hit the fixed attackers in every round: FedML's ``attack_prob`` is set to 1 for them.
"""
from __future__ import annotations

import functools
import importlib
import logging
from typing import Any, Callable, Optional

from fedml.core.common.ml_engine_backend import MLEngineBackend
from fedml.core.security.fedml_attacker import FedMLAttacker
from fedml.core.security.fedml_defender import FedMLDefender

from fedml_heterofl.fedml_bridge.adapters import AttackAdapter, DefenseAdapter
from fedml_heterofl.fedml_bridge.args import attack_name, defense_name

log = logging.getLogger(__name__)

_MARK = "_fedml_heterofl_wrapped"
#: FedML's ML engines that its security singletons switch off for (they are torch-only)
_NON_TORCH = (MLEngineBackend.ml_engine_backend_tf, MLEngineBackend.ml_engine_backend_jax,
              MLEngineBackend.ml_engine_backend_mxnet)


def _ours(args: Any, enable: str, namer: Callable[[Any], Optional[str]], package: str) -> Optional[str]:
    """Our registered name chosen by ``args`` (``None``: not enabled or not one of ours).

    ``package``'s ``REGISTRY`` is read only when the feature is enabled, at ``init`` time.
    """
    if not getattr(args, enable, False):
        return None
    name = namer(args)
    return name if name in importlib.import_module(package).REGISTRY else None


def _torch_engine(args: Any) -> bool:
    return getattr(args, MLEngineBackend.ml_engine_args_flag, None) not in _NON_TORCH


def _defender_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def init(self: FedMLDefender, args: Any) -> None:
        name = _ours(args, "enable_defense", defense_name, "fedml_heterofl.defense")
        if name is None:
            return original(self, args)
        if name == "multikrum":
            log.info("defense_type 'multikrum' is fedml_heterofl's Multi-Krum; FedML's KrumDefense is 'krum'")
        self.args = args
        self.defense_type = name
        self.defender = DefenseAdapter(args)
        self.is_enabled = _torch_engine(args)
        return None

    return init


def _attacker_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def init(self: FedMLAttacker, args: Any) -> None:
        name = _ours(args, "enable_attack", attack_name, "fedml_heterofl.attack")
        if name is None:
            return original(self, args)
        if isinstance(getattr(args, "attack_prob", None), float) and args.attack_prob != 1.0:
            log.warning("attack_prob=%s is ignored for %r: its fixed attackers attack in every round",
                        args.attack_prob, name)
        self.attack_type = name
        self.attacker = AttackAdapter(args)
        self.attack_prob = 1
        self.is_enabled = _torch_engine(args)
        return None

    return init


def _phase(original: Callable, holder: str, adapter: type, when: Callable[[Any], bool]) -> Callable:
    """Wrap a phase predicate: ``when(self)`` when ``self.<holder>`` is our adapter, FedML's answer otherwise."""
    @functools.wraps(original)
    def predicate(self: Any) -> bool:
        if isinstance(getattr(self, holder, None), adapter):
            return when(self)
        return original(self)

    return predicate


def _defense_on(self: FedMLDefender) -> bool:
    return self.is_defense_enabled()


def _model_attack(self: FedMLAttacker) -> bool:
    return self.is_attack_enabled() and self.attacker.model_attack


def _data_attack(self: FedMLAttacker) -> bool:
    return self.is_attack_enabled() and not self.attacker.model_attack


def register_with_fedml() -> None:
    """Install the wrappers on ``FedMLDefender`` and ``FedMLAttacker`` (idempotent; see module doc)."""
    if getattr(FedMLDefender.init, _MARK, False):
        return
    wrapped = {
        (FedMLDefender, "init"): _defender_init(FedMLDefender.init),
        (FedMLDefender, "is_defense_before_aggregation"):
            _phase(FedMLDefender.is_defense_before_aggregation, "defender", DefenseAdapter, _defense_on),
        (FedMLDefender, "is_defense_on_aggregation"):
            _phase(FedMLDefender.is_defense_on_aggregation, "defender", DefenseAdapter, _defense_on),
        (FedMLAttacker, "init"): _attacker_init(FedMLAttacker.init),
        (FedMLAttacker, "is_model_attack"): _phase(FedMLAttacker.is_model_attack, "attacker", AttackAdapter, _model_attack),
        (FedMLAttacker, "is_data_poisoning_attack"):
            _phase(FedMLAttacker.is_data_poisoning_attack, "attacker", AttackAdapter, _data_attack),
    }
    for (cls, name), function in wrapped.items():
        setattr(function, _MARK, True)
        setattr(cls, name, function)
    log.debug("registered fedml_heterofl's defenses and attacks with FedMLDefender/FedMLAttacker")
