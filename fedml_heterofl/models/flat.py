"""Flat parameters: a model's trainable parameters in a fixed order (``model.named_parameters()``),
concatenated into one vector of length ``d``. Buffers (BatchNorm running statistics) are not part
of the vector: updates and defenses never see them.

:func:`batched_loss` evaluates ``k`` flat parameter vectors on one batch in a single vectorised pass
(``torch.func.functional_call`` + ``vmap``), which HeteroFL's watermark verification (Lu, Hu et al.,
IEEE TIFS 2024, Alg. 5) and Zeno use instead of a Python loop over models; :class:`ModelLoss` is that
function as a round's ``loss_fn``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

Batch = Tuple[Tensor, Tensor]


class ParamLayout:
    """The fixed order, shapes and sizes of a model's trainable parameters."""

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names: List[str] = [n for n, _ in named]
        self.shapes: List[torch.Size] = [p.shape for _, p in named]
        self.numels: List[int] = [p.numel() for _, p in named]
        self.d: int = sum(self.numels)

    def flatten(self, model: nn.Module) -> Tensor:
        """The model's parameters as one detached float32 vector of length ``d``."""
        params = dict(model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1).float() for n in self.names])

    def unflatten(self, flat: Tensor) -> Dict[str, Tensor]:
        """Views of ``flat`` (shape ``(..., d)``) as a name -> tensor dict of shape ``(..., *shape)``."""
        if flat.shape[-1] != self.d:
            raise ValueError(f"flat parameters have length {flat.shape[-1]}, the model has d={self.d}")
        lead = flat.shape[:-1]
        chunks = torch.split(flat, self.numels, dim=-1)
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def load(self, model: nn.Module, flat: Tensor) -> None:
        """Copy the flat vector into the model's parameters (in place)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.unflatten(flat).items():
                params[name].copy_(value)


def batched_loss(
    model: nn.Module,
    layout: ParamLayout,
    params: Tensor,
    batch: Batch,
    *,
    chunk: int = 16,
    loss: nn.Module | None = None,
) -> Tensor:
    """Mean loss of each of ``k`` flat parameter vectors on ``batch``.

    Args:
        model: the architecture; its buffers (e.g. BatchNorm statistics) are used as they are, and
            it is evaluated in eval mode (dropout off).
        layout: the model's :class:`ParamLayout`.
        params: ``(k, d)`` flat parameter vectors.
        batch: ``(x, y)``.
        chunk: models evaluated per vectorised call (bounds memory at ``chunk`` parameter copies
            of activations). 16: on 2 cores, 100 ResNet20s on 4 trigger samples took 0.46 s in
            chunks of 16 and 0.66 s in chunks of 64 (smaller activations, fewer page faults). Models
            with ``vectorise_on_cpu = False`` (the CNN, the RNN) go one at a time on a CPU.
        loss: per-batch mean loss, default cross-entropy.

    Returns:
        Tensor of shape ``(k,)``.
    """
    loss = loss if loss is not None else nn.CrossEntropyLoss()
    x, y = batch
    buffers = dict(model.named_buffers())
    was_training = model.training
    model.eval()

    def one(p: Dict[str, Tensor]) -> Tensor:
        return loss(functional_call(model, (p, buffers), (x,)), y)

    step = 1 if evaluates_one_at_a_time(model, params.device) else chunk
    evaluate = vmap(one) if step > 1 else (lambda p: one({k: v[0] for k, v in p.items()})[None])
    try:
        with torch.no_grad():
            out = [evaluate(layout.unflatten(params[s:s + step])) for s in range(0, params.shape[0], step)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else params.new_zeros(0)


def evaluates_one_at_a_time(model: nn.Module, device: torch.device) -> bool:
    """Whether :func:`batched_loss` evaluates ``model``'s copies one at a time on ``device`` (on a CPU,
    models with ``vectorise_on_cpu = False``: the CNN, the RNN): then a copy's loss does not depend on
    which other copies it is evaluated with, bit for bit."""
    return device.type == "cpu" and not getattr(model, "vectorise_on_cpu", True)


class ModelLoss:
    """``loss_fn(params, batch)`` of a round context (:data:`~fedml_heterofl.defense.rows.LossFn`):
    :func:`batched_loss` of ``model``, with ``per_model`` telling the oracle whether a copy's loss is
    the same whichever copies it is evaluated with (:func:`evaluates_one_at_a_time`)."""

    def __init__(self, model: nn.Module, layout: ParamLayout) -> None:
        self.model, self.layout = model, layout

    def __call__(self, params: Tensor, batch: Batch) -> Tensor:
        return batched_loss(self.model, self.layout, params, batch)

    @property
    def per_model(self) -> bool:
        device = next(self.model.parameters()).device
        return evaluates_one_at_a_time(self.model, device)
