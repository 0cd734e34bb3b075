"""Attacks as pure tensor code (no FedML import): label flipping, sign flipping, Min-Max, Min-Sum and
the adaptive AGR-tailored attack of the HeteroFL paper §VI, ALIE, IPM and Eq. (7) searched with the
exact oracle (``adaptive_deviation``)."""
from fedml_heterofl.attack.base import (
    REGISTRY,
    DataAttack,
    ModelAttack,
    apply_model_attack,
    attack_context,
    build_attack,
    choose_attackers,
    register,
)
from fedml_heterofl.attack import adaptive, label_flip, min_max, min_sum, sign_flip  # noqa: F401  (registration)
from fedml_heterofl.attack import alie, ipm  # noqa: F401  (registration)
from fedml_heterofl.attack import adaptive_deviation  # noqa: F401  (registration)

__all__ = ["REGISTRY", "DataAttack", "ModelAttack", "apply_model_attack", "attack_context", "build_attack",
           "choose_attackers", "register"]
