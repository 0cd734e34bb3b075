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

__all__ = ["REGISTRY", "AggregationResult", "Defense", "RoundContext", "Selection", "build_defense", "register"]
