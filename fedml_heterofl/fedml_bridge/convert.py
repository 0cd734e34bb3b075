"""The one place where FedML's ``(sample_num, state_dict)`` lists and our flat tensors meet.

FedML hands the server *full model weights* ``w_i`` as ``state_dict``s (its ``ServerAggregator`` hooks); our defenses
and attacks take the *updates* ``g_i = w_i - w_t`` as one ``(n, d)`` tensor (the paper's notation). A
:class:`StateCodec` converts both ways:

* the flat vector holds the model's trainable parameters in :class:`~fedml_heterofl.models.ParamLayout`
  order (which is their ``state_dict`` order), as float32;
* every other ``state_dict`` entry — BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``,
  frozen parameters — is a *buffer*: never part of an update. The new global model's buffers are the
  sample-count-weighted mean of the buffers of the clients the defense **kept** (FedAvg's rule for
  them, restricted to trusted clients; an attacker's model poisoning changes only its parameters). When
  every update is removed the global buffers stay as they are. Integer buffers
  (``num_batches_tracked``) are rounded back to their dtype.

Several clients per FedML entry: an MPI worker that trains many clients sends one
:class:`ClientUpdates` — its clients' ids, stacked updates ``(k, d)``, sample counts and buffers — as
the "model parameters" of its FedML message (:meth:`ClientUpdates.to_fedml`, a plain ``dict``, which
FedML's server passes on unchanged).

:func:`fedml_dataset` builds FedML's 8-item dataset list (one client per FedML client index) from a
workload, for FedML's own loops (``backend: sp``; benchmarks/rounds.py).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fedml_heterofl.models import ParamLayout

if TYPE_CHECKING:
    from fedml_heterofl.simulation.workload import Workload

StateDict = Mapping[str, Tensor]
#: FedML's update list: ``[(sample_num, state_dict of the full weights)]``
ModelList = List[Tuple[float, StateDict]]

#: FedML's rule (``core/security/common/utils.is_weight_param``) for telling BatchNorm statistics
#: from weights when only a ``state_dict`` is known
_BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def is_weight_name(name: str) -> bool:
    """Whether a ``state_dict`` key is a weight by FedML's naming rule (not a BatchNorm statistic)."""
    return not any(s in name for s in _BN_STATISTICS)


class _Block:
    """A named group of ``state_dict`` entries flattened into one vector (order = ``names``)."""

    def __init__(self, template: StateDict, names: Sequence[str]) -> None:
        self.names = list(names)
        self.shapes = [template[n].shape for n in self.names]
        self.dtypes = [template[n].dtype for n in self.names]
        self.numels = [template[n].numel() for n in self.names]
        self.size = sum(self.numels)

    def stack(self, states: Sequence[StateDict], dtype: torch.dtype, device: torch.device) -> Tensor:
        """``(k, size)`` on ``device``: row i is ``states[i]``'s entries, flattened and concatenated."""
        out = torch.empty(len(states), self.size, dtype=dtype, device=device)
        for row, state in zip(out, states):
            missing = [n for n in self.names if n not in state]
            if missing:
                raise ValueError(f"a client's state_dict lacks {missing[0]!r} (the model has {len(self.names)} such "
                                 "entries); clients and server must build the same model")
            torch.cat([state[n].detach().reshape(-1).to(device=device, dtype=dtype) for n in self.names], out=row)
        return out

    def split(self, flat: Tensor) -> Dict[str, Tensor]:
        """Entries of one flat vector, each reshaped and cast back to its own dtype (integers rounded)."""
        out = {}
        for name, chunk, shape, dtype in zip(self.names, torch.split(flat, self.numels), self.shapes, self.dtypes):
            value = chunk.round() if not dtype.is_floating_point else chunk
            out[name] = value.reshape(shape).to(dtype, copy=True)
        return out


class StateCodec:
    """Converts between FedML ``state_dict``s and flat float32 parameter vectors of length ``d``.

    Args:
        template: a ``state_dict`` of the model (defines keys, shapes, dtypes and key order).
        param_names: the entries that form the flat vector. ``None``: FedML's naming rule (every
            floating entry that is not a BatchNorm statistic), for callers that know no model.
        device: where flat vectors and stacks are made (the server's compute device).
    """

    def __init__(self, template: StateDict, param_names: Optional[Sequence[str]] = None,
                 device: Optional[torch.device] = None) -> None:
        if param_names is None:
            param_names = [k for k, v in template.items() if is_weight_name(k) and v.is_floating_point()]
        wanted = set(param_names)
        unknown = sorted(wanted - set(template))
        if unknown:
            raise ValueError(f"param_names has {unknown[0]!r}, which is not in the model's state_dict")
        self.keys: List[str] = list(template)
        self.params = _Block(template, [k for k in self.keys if k in wanted])
        self.buffers = _Block(template, [k for k in self.keys if k not in wanted])
        self.d: int = self.params.size
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    @classmethod
    def for_model(cls, model: nn.Module) -> "StateCodec":
        """The codec of ``model`` on the model's device: its flat vector is exactly :class:`ParamLayout`'s."""
        layout = ParamLayout(model)
        device = next(iter(model.parameters())).device
        codec = cls(model.state_dict(), layout.names, device)
        if codec.params.names != layout.names:
            raise ValueError("the model's state_dict order of parameters differs from named_parameters() "
                             "(shared or tied parameters?); its updates cannot be flattened consistently")
        return codec

    def flatten(self, state: StateDict) -> Tensor:
        """The flat parameters ``(d,)`` of one ``state_dict``."""
        return self.params.stack([state], torch.float32, self.device)[0]

    def updates(self, states: Sequence[StateDict], global_params: Tensor) -> Tensor:
        """The updates ``U`` of shape ``(k, d)``: row i is ``w_i - w_t`` (``w_t`` = ``global_params``)."""
        U = self.params.stack(states, torch.float32, self.device)
        U -= global_params
        return U

    def buffer_matrix(self, states: Sequence[StateDict]) -> Tensor:
        """``(k, b)`` float64: row i holds ``states[i]``'s buffers, flattened."""
        return self.buffers.stack(states, torch.float64, self.device)

    def average_buffers(self, states: Sequence[StateDict], weights: Tensor) -> Dict[str, Tensor]:
        """Buffers ``Σ_i ω_i b_i`` of ``states`` for weights ``ω`` (normalised here to sum to 1)."""
        if not self.buffers.names:
            return {}
        return self.average_buffer_rows(self.buffer_matrix(states), weights)

    def average_buffer_rows(self, rows: Tensor, weights: Tensor) -> Dict[str, Tensor]:
        """As :meth:`average_buffers`, for buffers already flattened into the rows of ``rows`` ``(k, b)``."""
        if not self.buffers.names:
            return {}
        w = weights.to(device=self.device, dtype=torch.float64)
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(w))
        return self.buffers.split(w @ rows.to(device=self.device, dtype=torch.float64))

    def state(self, params: Tensor, buffers: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
        """A ``state_dict`` (the model's key order and dtypes) from flat ``params`` and ``buffers``.

        Buffers are copied; every entry owns its memory (FedML code mutates dicts in place).
        """
        if params.shape != (self.d,):
            raise ValueError(f"params must have shape ({self.d},), got {tuple(params.shape)}")
        missing = [n for n in self.buffers.names if n not in buffers]
        if missing:
            raise ValueError(f"buffers lack {missing[0]!r}")
        entries = self.params.split(params)
        entries.update({n: buffers[n].detach().clone() for n in self.buffers.names})
        return OrderedDict((k, entries[k]) for k in self.keys)


@dataclass
class ClientUpdates:
    """Several clients' results of one round, sent by one MPI worker as one FedML entry.

    Attributes:
        round_idx: the round they were trained in.
        client_ids: ``(k,)`` int64.
        updates: ``(k, d)`` float32, row i = ``w_i - w_t`` of client ``client_ids[i]``.
        sample_counts: ``(k,)`` float32, each client's training rows.
        buffers: ``(k, b)`` float64, each client's buffers after training (:meth:`StateCodec.buffer_matrix`;
            ``b = 0`` for models without any).
    """

    round_idx: int
    client_ids: Tensor
    updates: Tensor
    sample_counts: Tensor
    buffers: Tensor

    #: the key that marks a FedML entry as :class:`ClientUpdates`
    MARK = "fedml_heterofl_client_updates"

    def __post_init__(self) -> None:
        k = self.client_ids.shape[0]
        if (self.client_ids.dim() != 1 or self.updates.dim() != 2 or self.updates.shape[0] != k
                or self.sample_counts.shape != (k,) or self.buffers.dim() != 2 or self.buffers.shape[0] != k):
            raise ValueError(f"ClientUpdates: shapes disagree: client_ids {tuple(self.client_ids.shape)}, updates "
                             f"{tuple(self.updates.shape)}, sample_counts {tuple(self.sample_counts.shape)}, "
                             f"buffers {tuple(self.buffers.shape)} (need (k,), (k, d), (k,), (k, b))")

    def to_fedml(self) -> Dict[str, Any]:
        """The FedML message payload: a plain ``dict`` of CPU tensors."""
        return {self.MARK: int(self.round_idx), "client_ids": self.client_ids.cpu(), "updates": self.updates.cpu(),
                "sample_counts": self.sample_counts.cpu(), "buffers": self.buffers.cpu()}

    @classmethod
    def is_payload(cls, entry: Any) -> bool:
        """Whether a FedML entry's parameters are a :meth:`to_fedml` payload."""
        return isinstance(entry, dict) and cls.MARK in entry

    @classmethod
    def from_fedml(cls, payload: Mapping[str, Any]) -> "ClientUpdates":
        if not cls.is_payload(payload):
            raise ValueError("a FedML entry without client ids: each worker must send ClientUpdates.to_fedml()")
        return cls(int(payload[cls.MARK]), payload["client_ids"], payload["updates"], payload["sample_counts"],
                   payload["buffers"])


def sample_counts(models: ModelList) -> Tensor:
    """The ``sample_num`` of each entry of a FedML update list, as a float64 tensor."""
    return torch.tensor([float(n) for n, _ in models], dtype=torch.float64)


def copy_state(state: StateDict) -> "OrderedDict[str, Tensor]":
    """A deep copy of a ``state_dict`` on the CPU (what ``get_model_params`` hands FedML: never the live
    dict, and transferable between processes whatever the device)."""
    return OrderedDict((k, v.detach().to("cpu", copy=True)) for k, v in state.items())


# ---------------------------------------------------------------------------------------------
# Client data: FedML's containers <-> tensors
# ---------------------------------------------------------------------------------------------

def as_tensors(data: Any) -> Tuple[Tensor, Tensor]:
    """A client's data as ``(x, y)`` tensors.

    Accepts a pair of tensors ``(x, y)``, a ``DataLoader`` over a ``TensorDataset`` (read without
    iterating), or any iterable of ``(x, y)`` batches (FedML's loaders and batch lists).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    elif isinstance(data, DataLoader) and isinstance(data.dataset, TensorDataset) and len(data.dataset.tensors) == 2:
        x, y = data.dataset.tensors
    else:
        try:
            batches = list(data)
            x = torch.cat([torch.as_tensor(b[0]) for b in batches])
            y = torch.cat([torch.as_tensor(b[1]) for b in batches])
        except (TypeError, IndexError, RuntimeError) as exc:
            raise ValueError(f"client data must be (x, y) tensors, a DataLoader or (x, y) batches; got "
                             f"{type(data).__name__} ({exc})") from None
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"client data has {x.shape[0]} inputs but {y.shape[0]} labels")
    return x, y


def like(data: Any, x: Tensor, y: Tensor, batch_size: int) -> Any:
    """``(x, y)`` in the container kind of ``data``: a tensor pair stays a pair, anything else becomes an
    unshuffled ``DataLoader`` (``data``'s batch size, else ``batch_size``)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return x, y
    return DataLoader(TensorDataset(x, y), batch_size=getattr(data, "batch_size", None) or batch_size, shuffle=False)


def fedml_dataset(work: "Workload", batch_size: int) -> List[Any]:
    """FedML's 8-item dataset list from a workload: client i's clean partition as a ``DataLoader``, the
    test set for every client, each client's sample count with the trigger rows (as the standalone
    counts them), and the model's number of outputs."""
    data = work.dataset

    def loader(x: Tensor, y: Tensor) -> DataLoader:
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

    test = loader(data.test_x, data.test_y)
    train_local = {i: loader(data.train_x[ix], data.train_y[ix]) for i, ix in enumerate(work.parts)}
    counts = {i: len(ix) for i, ix in enumerate(work.client_index)}
    return [len(data.train_y), len(data.test_y), None, test, counts, train_local, {i: test for i in train_local},
            data.num_classes + (work.trigger_set is not None)]
