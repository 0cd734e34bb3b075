"""Aggregation rules as pure tensor code (no FedML import): HeteroFL, the paper's baselines, and the
breadth rules (trimmed mean, Bulyan, geometric median, centered clipping). Families of rules that need a
heavy import (FedML's own defenses as ``fedml:<name>``) are provided to :data:`REGISTRY` from above, by the
``fedml_heterofl.defense_families`` entry point (:class:`~fedml_heterofl.registry.Registry`), and imported
on the first lookup of such a name."""
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
from fedml_heterofl.defense import trimmed_mean, bulyan, geomed, centered_clipping  # noqa: F401

__all__ = ["REGISTRY", "AggregationResult", "Defense", "RoundContext", "Selection", "build_defense", "register"]
