"""Aggregation rules as pure tensor code (no FedML import): HeteroFL and the paper's baselines."""
from fedml_heterofl.defense.base import (
    REGISTRY,
    AggregationResult,
    Defense,
    RoundContext,
    Selection,
    build_defense,
    register,
)
from fedml_heterofl.defense import heterofl  # noqa: F401  (registers "heterofl")
from fedml_heterofl.defense import fedavg, multikrum, median, zeno, fltrust, dnc  # noqa: F401

__all__ = ["REGISTRY", "AggregationResult", "Defense", "RoundContext", "Selection", "build_defense", "register"]
