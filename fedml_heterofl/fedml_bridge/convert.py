"""The one place where FedML's ``(sample_num, state_dict)`` lists and our flat tensors meet.

FedML hands the server *full model weights* ``w_i`` as ``state_dict``s (notes §1.3); our defenses and
attacks take the *updates* ``g_i = w_i - w_t`` as one ``(n, d)`` tensor (DESIGN §3). A
:class:`StateCodec` converts both ways:

* the flat vector holds the model's trainable parameters in :class:`~fedml_heterofl.models.ParamLayout`
  order (which is their ``state_dict`` order), as float32;
* every other ``state_dict`` entry — BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``,
  frozen parameters — is a *buffer*: never part of an update. The new global model's buffers are the
  sample-count-weighted mean of the buffers of the clients the defense **kept** (FedAvg's rule for
  them, restricted to trusted clients; an attacker's model poisoning changes only its parameters). When
  every update is removed the global buffers stay as they are. Integer buffers
  (``num_batches_tracked``) are rounded back to their dtype.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fedml_heterofl.models import ParamLayout

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
        w = weights.to(device=self.device, dtype=torch.float64)
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(w))
        return self.buffers.split(w @ self.buffer_matrix(states))

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
