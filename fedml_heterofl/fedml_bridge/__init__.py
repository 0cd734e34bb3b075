"""Everything of fedml_heterofl that imports FedML 0.9.6: the package's FedML edge
(``docs/architecture.md``).

Importing this package registers our defenses and attacks with FedML's ``FedMLDefender`` and
``FedMLAttacker`` (:func:`register_with_fedml`), so ``defense_type: heterofl`` or ``attack_type:
min_max`` work in an ordinary FedML YAML beside FedML's built-ins.

* :func:`init` — offline ``fedml.init`` with FedML's home folder under the run directory.
* :class:`HeteroFLServerAggregator`, :class:`HeteroFLClientTrainer` — FedML's lifecycle hooks running
  fixed attackers' model/data poisoning, our defenses and seeded local SGD;
  :class:`HeteroFLWorkerTrainer` — a FedML client that trains several clients per round and sends
  them as one :class:`ClientUpdates`.
* :func:`run_cross_silo`, :func:`abort_on_error`, :class:`SiloView` — FedML's cross-silo MPI backend
  without hangs, with worker processes as FedML's silos; :mod:`.mpi_backend` — the MPI backend of
  ``fedml-heterofl run`` (imported on demand).
* :func:`malicious_client_ids` — the run's fixed attackers.
* :mod:`.fedml_defenses` — FedML's own defenses as our rules ``fedml:<name>`` (imported by the defense
  registry on the first lookup of such a name, not here).
"""
from fedml_heterofl.fedml_bridge.adapters import AttackAdapter, DefenseAdapter, RoundProduct, fedml_round
from fedml_heterofl.fedml_bridge.aggregator import HeteroFLServerAggregator
from fedml_heterofl.fedml_bridge.args import malicious_client_ids
from fedml_heterofl.fedml_bridge.convert import ClientUpdates, StateCodec
from fedml_heterofl.fedml_bridge.mpi import SiloView, abort_on_error, run_cross_silo
from fedml_heterofl.fedml_bridge.offline import fedml_home, init
from fedml_heterofl.fedml_bridge.registration import register_with_fedml
from fedml_heterofl.fedml_bridge.trainer import HeteroFLClientTrainer, HeteroFLWorkerTrainer, evaluate

register_with_fedml()

__all__ = [
    "AttackAdapter", "ClientUpdates", "DefenseAdapter", "HeteroFLClientTrainer", "HeteroFLServerAggregator",
    "HeteroFLWorkerTrainer", "RoundProduct", "SiloView", "StateCodec", "abort_on_error", "evaluate", "fedml_home",
    "fedml_round", "init", "malicious_client_ids", "register_with_fedml", "run_cross_silo",
]
