"""Everything of fedml_heterofl that imports FedML 0.9.6 (DESIGN §8).

Importing this package registers our defenses and attacks with FedML's ``FedMLDefender`` and
``FedMLAttacker`` (:func:`register_with_fedml`), so ``defense_type: heterofl`` or ``attack_type:
min_max`` work in an ordinary FedML YAML beside FedML's built-ins.

* :func:`init` — offline ``fedml.init`` with FedML's home folder under the run directory.
* :class:`HeteroFLServerAggregator`, :class:`HeteroFLClientTrainer` — FedML's lifecycle hooks running
  fixed attackers' model/data poisoning, our defenses and seeded local SGD.
* :func:`run_cross_silo`, :func:`abort_on_error` — FedML's cross-silo MPI backend without hangs.
* :func:`malicious_client_ids` — the run's fixed attackers.
"""
from fedml_heterofl.fedml_bridge.adapters import AttackAdapter, DefenseAdapter, RoundProduct, fedml_round
from fedml_heterofl.fedml_bridge.aggregator import HeteroFLServerAggregator
from fedml_heterofl.components import malicious_client_ids
from fedml_heterofl.fedml_bridge.convert import StateCodec
from fedml_heterofl.fedml_bridge.mpi import abort_on_error, run_cross_silo
from fedml_heterofl.fedml_bridge.offline import fedml_home, init
from fedml_heterofl.fedml_bridge.registration import register_with_fedml
from fedml_heterofl.fedml_bridge.trainer import HeteroFLClientTrainer, evaluate

register_with_fedml()

__all__ = [
    "AttackAdapter", "DefenseAdapter", "HeteroFLClientTrainer", "HeteroFLServerAggregator", "RoundProduct",
    "StateCodec", "abort_on_error", "evaluate", "fedml_home", "fedml_round", "init", "malicious_client_ids",
    "register_with_fedml", "run_cross_silo",
]
