"""``HeteroFLClientTrainer``: FedML's client lifecycle with our data poisoning and seeded local SGD.

FedML's hooks and what they do here:

* ``update_dataset(train, test, n)`` — a fixed attacker's training data is poisoned by our data
  attack (labels/inputs; its test data stays as it is). FedML's own data attacks
  (``label_flipping``) run through FedML's ``ClientTrainer.update_dataset`` as before.
* ``train(train_data, device, args)`` — :func:`~fedml_heterofl.simulation.local_training.local_sgd`
  from the current weights on the client's (poisoned) data plus HeteroFL's trigger set ``D_trg``
  (Alg. 1, lines 1-3: every client appends it; the trigger samples keep label L), with the batch
  order seeded by ``(random_seed, round_idx, client id)`` only — so the same client trains to the same
  update in FedML's MPI processes and in the standalone simulator.

  FedML pitfall: cross-silo's ``FedMLTrainer.train`` passes the silo's *original* data to
  ``train``, not the poisoned data ``update_dataset`` stored, so FedML's own label flipping never
  reaches training there. This trainer trains on what ``update_dataset`` stored whenever
  ``train_data`` is the object given to ``update_dataset``.
  FedML's ``LabelFlippingAttack.poison_data`` returns float labels; they are cast to integers.
* ``test(test_data, device, args)`` — ``{"test_correct", "test_total", "test_loss", "test_acc"}``.

The client id is FedML's trainer id (``set_id``): cross-silo sets it to ``rank - 1``; a
single-process loop calls ``set_id(client_id)`` before ``update_dataset``.

``HeteroFLWorkerTrainer`` is the other shape, for MPI jobs with fewer processes than clients: FedML's
silo is a worker process, which trains its share of each round's clients
(:func:`~fedml_heterofl.simulation.clients.assign_clients`) with the standalone simulator's
:func:`~fedml_heterofl.simulation.clients.train_clients` and sends them as one
:class:`~fedml_heterofl.fedml_bridge.convert.ClientUpdates`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from fedml.core import ClientTrainer
from fedml.core.dp.fedml_differential_privacy import FedMLDifferentialPrivacy
from fedml.core.fhe.fhe_agg import FedMLFHE
from fedml.core.security.fedml_attacker import FedMLAttacker
from torch import Tensor, nn

from fedml_heterofl.defense.base import Batch
from fedml_heterofl.fedml_bridge.adapters import AttackAdapter
from fedml_heterofl.fedml_bridge.args import round_index, sgd_settings
from fedml_heterofl.fedml_bridge.convert import ClientUpdates, StateCodec, StateDict, as_tensors, copy_state
from fedml_heterofl.models import ParamLayout
from fedml_heterofl.record.metrics import evaluate_model
from fedml_heterofl.simulation.clients import client_threads, train_clients
from fedml_heterofl.simulation.local_training import client_seed, local_sgd
from fedml_heterofl.simulation.workload import ClientPlan, RowReader

def evaluate(model: nn.Module, data: Any) -> Dict[str, float]:
    """:func:`~fedml_heterofl.record.metrics.evaluate_model` on FedML's data (a DataLoader or
    ``(x, y)``)."""
    x, y = as_tensors(data)
    return evaluate_model(model, x, y)


class HeteroFLClientTrainer(ClientTrainer):
    """FedML ``ClientTrainer`` of fedml_heterofl (see module doc).

    Args:
        model: the client's model (the architecture the server aggregates).
        args: FedML's flat ``args``; reads ``random_seed``, ``round_idx`` and the local-training keys
            of :func:`~fedml_heterofl.fedml_bridge.args.sgd_settings`; the attack keys through
            ``FedMLAttacker`` (initialised here by FedML's ``ClientTrainer.__init__``).
        trigger_set: HeteroFL's ``D_trg`` (inputs, labels ``L``) appended to every client's training
            data, or ``None``.
    """

    def __init__(self, model: nn.Module, args: Any, *, trigger_set: Optional[Batch] = None) -> None:
        super().__init__(model, args)
        self.layout = ParamLayout(model)
        self.sgd = sgd_settings(args)
        self.seed = int(getattr(args, "random_seed", 0) or 0)
        self.trigger_set = trigger_set
        self._given_train: Any = None

    def get_model_params(self) -> StateDict:
        """A copy of the model's ``state_dict`` (never the live one)."""
        return copy_state(self.model.state_dict())

    def set_model_params(self, model_parameters: StateDict) -> None:
        self.model.load_state_dict(model_parameters)

    def update_dataset(self, local_train_dataset: Any, local_test_dataset: Any, local_sample_number: Any) -> None:
        """Store the round's data; poison the training data of a fixed attacker (our data attacks)."""
        attacker = FedMLAttacker.get_instance()
        adapter = attacker.attacker if attacker.is_enabled and isinstance(attacker.attacker, AttackAdapter) else None
        if adapter is None:
            super().update_dataset(local_train_dataset, local_test_dataset, local_sample_number)
        else:
            poisoned = adapter.poisons(self.id)
            self.local_train_dataset = adapter.poison_data(local_train_dataset) if poisoned else local_train_dataset
            self.local_test_dataset = local_test_dataset
            self.local_sample_number = local_sample_number
        self._given_train = local_train_dataset

    def train(self, train_data: Any, device: Any, args: Any) -> Tensor:
        """Local SGD from the current weights (see module doc); returns the update ``w_i - w_t``."""
        if train_data is self._given_train and self.local_train_dataset is not None:
            train_data = self.local_train_dataset
        x, y = as_tensors(train_data)
        if y.is_floating_point():  # FedML's label flipping returns float labels
            y = y.long()
        if self.trigger_set is not None:
            x = torch.cat([x, self.trigger_set[0].to(x.dtype)])
            y = torch.cat([y, self.trigger_set[1].to(y.dtype)])
        device = _device(device)
        self.model.to(device)
        w_t = self.layout.flatten(self.model)
        seed = client_seed(self.seed, round_index(args), int(self.id))
        return local_sgd(self.model, self.layout, w_t, x.to(device), y.to(device), seed=seed, **self.sgd)

    def test(self, test_data: Any, device: Any, args: Any) -> Dict[str, float]:
        """:func:`evaluate` the client's model on ``device``."""
        self.model.to(_device(device))
        return evaluate(self.model, test_data)


class HeteroFLWorkerTrainer(ClientTrainer):
    """FedML ``ClientTrainer`` of an MPI worker that trains several clients per round (module doc).

    Per round ``t`` (``args.round_idx``): ``set_model_params(w_t)``, then ``train`` gathers the rows of
    ``share(t)`` only (:meth:`~fedml_heterofl.simulation.workload.ClientPlan.gather`: the attackers'
    rows poisoned by the run's data attack, the trigger rows appended), trains them from ``w_t`` and
    keeps their :class:`ClientUpdates`, which ``get_model_params`` hands to FedML. FedML's silo data
    (``update_dataset``) is not used. Models with buffers (batch norm) train one client at a time, each
    from the global buffers, and report their buffers; the others train vectorised when ``vectorise``,
    else ``threads`` at a time.

    Args:
        model: the model (scratch space; its parameters are overwritten).
        args: FedML's flat ``args`` (``random_seed``, local-training keys, ``round_idx``).
        plan: the run's clients (:func:`~fedml_heterofl.simulation.workload.client_plan`).
        read_rows: reads training rows (e.g. :meth:`~fedml_heterofl.data.cache.DatasetCache.rows`).
        share: ``share(t)`` -> this worker's client ids in round ``t``.
        vectorise, chunk: as :func:`~fedml_heterofl.simulation.clients.train_clients`.
        threads: ``train_args.client_threads`` (:func:`~fedml_heterofl.simulation.clients.client_threads`).
    """

    def __init__(self, model: nn.Module, args: Any, *, plan: ClientPlan, read_rows: RowReader,
                 share: Callable[[int], Tensor], vectorise: bool, chunk: int, threads: Optional[int] = None) -> None:
        super().__init__(model, args)
        if FedMLFHE.get_instance().is_fhe_enabled() or FedMLDifferentialPrivacy.get_instance().is_local_dp_enabled():
            raise ValueError("enable_fhe / local DP: FedML would encrypt or perturb a whole model, but a worker "
                             "sends several clients' updates; allowed: false")
        self.plan, self.read_rows, self.share = plan, read_rows, share
        self.vectorise, self.chunk, self.threads = vectorise, chunk, threads
        self.layout = ParamLayout(model)
        self.codec = StateCodec.for_model(model)
        self.sgd = sgd_settings(args)
        self.seed = int(getattr(args, "random_seed", 0) or 0)
        self.counts = plan.sample_counts
        self._global: Optional[StateDict] = None
        self._result: Optional[ClientUpdates] = None

    def get_model_params(self) -> Dict[str, Any]:
        """The last round's :class:`ClientUpdates` as FedML's payload."""
        if self._result is None:
            raise RuntimeError("get_model_params() before train(): a worker sends its clients' updates")
        return self._result.to_fedml()

    def set_model_params(self, model_parameters: StateDict) -> None:
        """``w_t`` from the server (kept: each client with buffers starts from it)."""
        self._global = copy_state(model_parameters)
        self.model.load_state_dict(model_parameters)

    def update_dataset(self, local_train_dataset: Any, local_test_dataset: Any, local_sample_number: Any) -> None:
        """FedML's silo data is not used; the clients' rows come from ``plan`` (data attacks included)."""
        self.local_sample_number = local_sample_number

    def train(self, train_data: Any, device: Any, args: Any) -> None:
        """Train this worker's clients of round ``args.round_idx`` (class doc)."""
        if self._global is None:
            raise RuntimeError("train() before set_model_params(): the worker has no global model")
        t = round_index(args)
        clients = self.share(t)
        device = _device(device)
        x, y, index = self.plan.gather(clients.tolist(), self.read_rows)
        x, y, index = x.to(device), y.to(device), [ix.to(device) for ix in index]
        self.model.to(device)
        w = self.layout.flatten(self.model)
        seeds = [client_seed(self.seed, t, int(c)) for c in clients]
        if self.codec.buffers.names:
            rows, buffers = [], []
            for i in range(len(index)):
                self.model.load_state_dict(self._global)
                rows.append(train_clients(self.model, self.layout, w, x, y, index[i:i + 1], seeds[i:i + 1],
                                          vectorise=False, chunk=1, **self.sgd))
                buffers.append(self.codec.buffer_matrix([self.model.state_dict()]))
            U = torch.cat(rows) if rows else w.new_zeros(0, self.layout.d)
            B = torch.cat(buffers) if buffers else torch.zeros(0, self.codec.buffers.size, dtype=torch.float64)
        else:
            U = train_clients(self.model, self.layout, w, x, y, index, seeds, vectorise=self.vectorise,
                              chunk=self.chunk, threads=client_threads(self.threads, device), **self.sgd)
            B = torch.zeros(len(index), 0, dtype=torch.float64)
        self._result = ClientUpdates(t, clients, U.cpu(), self.counts[clients], B.cpu())


def _device(device: Any) -> torch.device:
    """FedML's ``device`` argument as a ``torch.device`` (CPU when ``None``)."""
    return torch.device(device) if device is not None else torch.device("cpu")
