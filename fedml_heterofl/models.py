"""Models of the paper's four workloads and flat-parameter helpers.

Flat parameters: a model's trainable parameters in a fixed order (``model.named_parameters()``),
concatenated into one vector of length ``d``. Buffers (BatchNorm running statistics) are not part
of the vector: updates and defenses never see them.

``batched_loss`` evaluates ``k`` flat parameter vectors on one batch in a single vectorised pass
(``torch.func.functional_call`` + ``vmap``), which HeteroFL's watermark verification (Alg. 5) and
Zeno use instead of a Python loop over models.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Dict, Iterator, List, Optional, Tuple

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


# ---------------------------------------------------------------------------------------------
# The paper's four architectures (DESIGN §7). ``num_classes`` is L; ``watermark=True`` adds HeteroFL's
# (L+1)-th output for the trigger label L (Alg. 1, line 3). Layer shapes equal FedML 0.9.6's models,
# so the parameter counts match (checked in tests against FedML's classes).
# ---------------------------------------------------------------------------------------------

class LogisticRegression(nn.Module):
    """Multinomial logistic regression on flattened inputs (FedML's ``LogisticRegression`` shape).

    FedML's version applies a sigmoid to the outputs; ours returns the logits, which is what the
    cross-entropy loss expects (softmax regression).
    """

    def __init__(self, input_dim: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


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


def dropout_mask(shape: Tuple[int, ...], p: float, *, dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None) -> Tensor:
    """An inverted-dropout mask: each entry 0 with probability ``p``, else ``1 / (1 - p)``.

    Each entry compares a uniform 16-bit number (64-bit words from ``generator``, default: torch's
    global one, cut into four) with ``round(p · 2^16)``: exactly ``p`` for the multiples of 2^-16 (the
    CNN's 0.25 and 0.5), within 2^-17 of ``p`` otherwise. ``bernoulli_``, which ``nn.Dropout`` uses,
    draws a double per entry: on these 2 cores 4.3-4.9 ms for the CNN's first mask on a batch of 32
    (295k entries) against 0.8 ms here, ~8 % of the CNN's training step.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None, generator=generator)
    keep = words.view(torch.int16)[:n].view(shape) >= -2**15 + round(p * 2**16)
    return keep.to(dtype).mul_(1.0 / (1.0 - p) if p < 1.0 else 0.0)


#: the generator :class:`Dropout` draws its masks from (``None``: torch's global one); per thread and task
_DROPOUT_GENERATOR: ContextVar[Optional[torch.Generator]] = ContextVar("dropout_generator", default=None)


@contextmanager
def dropout_generator(generator: Optional[torch.Generator]) -> Iterator[None]:
    """Within the block, :class:`Dropout` layers draw their masks from ``generator`` (a context variable:
    each thread has its own, so clients training in parallel threads draw from their own generators)."""
    token = _DROPOUT_GENERATOR.set(generator)
    try:
        yield
    finally:
        _DROPOUT_GENERATOR.reset(token)


def draws_from_global_rng(model: nn.Module) -> bool:
    """Whether training ``model`` draws from torch's global RNG: it has dropout layers other than
    :class:`Dropout` (e.g. torch's ``nn.Dropout``)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and not isinstance(m, Dropout) for m in model.modules())


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same train/eval behaviour) with the faster mask of :func:`dropout_mask`,
    drawn from the generator of :func:`dropout_generator` — during local training the client's own,
    seeded by ``(seed, round, client)`` (:func:`~fedml_heterofl.simulation.local_training.local_sgd`)
    — else from torch's global generator. Masks on other devices are drawn on the CPU and moved."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = dropout_mask(tuple(x.shape), self.p, dtype=x.dtype, generator=_DROPOUT_GENERATOR.get())
        return x * mask.to(x.device)


class CNN(nn.Module):
    """FedML's ``CNN_DropOut`` (Reddi et al., "Adaptive Federated Optimization"): two 3×3 convolutions
    (32, 64), 2×2 max-pooling, dropout 0.25, dense 128, dropout 0.5, dense ``num_classes``; 28×28
    inputs. FedML's class ignores ``output_dim`` (10 or 62 only); ours takes any ``num_classes``.

    The same function as FedML's, computed faster on CPU (``benchmarks/rounds.py``): the convolution
    weights are ``channels_last`` (oneDNN's NHWC kernels; the parameters' values and shapes, the flat
    vector and the state dict are unchanged); the second ReLU comes after the max-pooling
    (``maxpool(relu(z)) = relu(maxpool(z))`` exactly, gradients included, on 4× fewer entries); the
    dropout masks come from :class:`Dropout`.

    ``vectorise_on_cpu = False``: on a CPU its copies evaluate one at a time in :func:`batched_loss`
    (100 CNNs, 2 threads: on 32 images 0.75 s one at a time, 1.66 s vmapped; on HeteroFL's 4 trigger
    images 0.16 s either way).
    """

    vectorise_on_cpu = False

    def __init__(self, num_classes: int = 62, in_channels: int = 1) -> None:
        super().__init__()
        self.conv2d_1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.conv2d_2 = nn.Conv2d(32, 64, kernel_size=3)
        self.max_pooling = nn.MaxPool2d(2, stride=2)
        self.dropout_1 = Dropout(0.25)
        self.linear_1 = nn.Linear(9216, 128)
        self.dropout_2 = Dropout(0.5)
        self.linear_2 = nn.Linear(128, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, self.conv2d_1.in_channels, 28, 28)
        x = torch.relu(self.conv2d_1(x))
        x = torch.relu(self.max_pooling(self.conv2d_2(x)))
        x = self.dropout_1(x).flatten(1)
        x = self.dropout_2(torch.relu(self.linear_1(x)))
        return self.linear_2(x)


class _BasicBlock(nn.Module):
    """He et al.'s basic residual block; a 1×1 convolution + BatchNorm shortcut when the shape changes
    (as FedML's ``resnet20``)."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNet20(nn.Module):
    """ResNet-20 for 32×32 CIFAR images (He et al. 2016): a 3×3 stem with 16 channels, three stages of
    three basic blocks (16, 32, 64 channels, stride 2 between stages), global average pooling, dense
    ``num_classes``. 272,474 trainable parameters for 10 classes, as FedML's ``resnet20``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(*[_BasicBlock(inplanes if i == 0 else planes, planes, stride if i == 0 else 1)
                                          for i in range(3)]))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class _LSTMRecurrence(torch.autograd.Function):
    """The recurrent part of one LSTM layer, ``h_t, c_t`` from the input projections ``x_t W_ihᵀ + b_ih +
    b_hh`` and ``W_hh`` (PyTorch's gate order i, f, g, o), with a hand-written backward pass through time:
    the per-step backward is one ``(B, 4H) x (4H, H)`` product, and ``∂W_hh = Σ_t ∂g_tᵀ h_{t-1}`` is one
    product over all steps at the end (autograd of the plain loop would form and add one ``(4H, H)``
    gradient per step). Written in torch ops only, so ``torch.func`` transforms it
    (``generate_vmap_rule``): under ``vmap`` over clients each product becomes a batched product.

    Inputs: ``xi (..., B, T, 4H)``, ``w_hh (..., 4H, H)``. Outputs: ``h`` and ``c`` ``(..., B, T, H)``
    and, for the backward pass only (not differentiable), the sigmoid of all four gate pre-activations
    and ``tanh`` of the cell gate.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(xi: Tensor, w_hh: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        H = w_hh.shape[-1]
        w = w_hh.mT
        h = xi.new_zeros(xi.shape[:-2] + (H,))
        c = h
        hs, cs, sig, cell = [], [], [], []
        for x_t in xi.unbind(-2):
            g = torch.addmm(x_t, h, w) if h.dim() == 2 else torch.baddbmm(x_t, h, w)
            s = torch.sigmoid(g)  # i, f, o (the g block's sigmoid is not used)
            gg = torch.tanh(g[..., 2 * H:3 * H])
            c = torch.addcmul(s[..., H:2 * H] * c, s[..., :H], gg)
            h = s[..., 3 * H:] * torch.tanh(c)
            hs.append(h)
            cs.append(c)
            sig.append(s)
            cell.append(gg)
        return torch.stack(hs, -2), torch.stack(cs, -2), torch.stack(sig, -2), torch.stack(cell, -2)

    @staticmethod
    def setup_context(ctx: Any, inputs: Tuple[Tensor, Tensor], output: Tuple[Tensor, ...]) -> None:
        ctx.save_for_backward(inputs[1], *output)
        ctx.mark_non_differentiable(*output[2:])

    @staticmethod
    def backward(ctx: Any, d_h: Tensor, d_c: Tensor, *_: Tensor) -> Tuple[Tensor, Tensor]:
        w_hh, hs, cs, sig, cell = ctx.saved_tensors
        H = w_hh.shape[-1]
        d_h, d_c = d_h.unbind(-2), d_c.unbind(-2)
        cs_t, sig_t, cell_t = cs.unbind(-2), sig.unbind(-2), cell.unbind(-2)
        dh = torch.zeros_like(d_h[0])
        dc = dh
        dgates = [dh] * len(d_h)
        for t in range(len(d_h) - 1, -1, -1):
            s, gg = sig_t[t], cell_t[t]
            dh = dh + d_h[t]
            tc = torch.tanh(cs_t[t])
            dc = dc + d_c[t] + dh * s[..., 3 * H:] * (1 - tc * tc)
            c_prev = cs_t[t - 1] if t > 0 else torch.zeros_like(dc)
            # ∂ pre-activations: upstream gradient of (i, f, g, o) times the gates' derivatives
            up = torch.cat([dc * gg, dc * c_prev, dc * s[..., :H], dh * tc], -1)
            slope = s * (1 - s)
            slope[..., 2 * H:3 * H] = 1 - gg * gg
            dgates[t] = up * slope
            dc = dc * s[..., H:2 * H]
            dh = dgates[t] @ w_hh
        d_xi = torch.stack(dgates, -2)
        d_w = d_xi[..., 1:, :].flatten(-3, -2).mT @ hs[..., :-1, :].flatten(-3, -2)
        return d_xi, d_w


class LSTM(nn.LSTM):
    """``nn.LSTM`` (``batch_first``, zero initial state) that ``torch.func.vmap`` can batch.

    The same module as ``nn.LSTM`` — parameters, their names and order (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``, ...), initialisation and state dict (old checkpoints load) — and the
    same outputs ``(out, (h_n, c_n))``. PyTorch has no ``vmap`` batching rule for its fused LSTM, so
    under a ``torch.func`` transform (the input or a weight is a functorch tensor) each layer is
    computed by :class:`_LSTMRecurrence` from ``torch`` ops: :func:`batched_loss` can evaluate many
    clients' RNNs in one ``vmap``, and
    :func:`~fedml_heterofl.simulation.local_training.local_sgd_vectorised` train many clients in one
    ``vmap(grad)`` (on a CPU both are slower than one model at a time, see :class:`RNN`). On plain
    tensors PyTorch's fused LSTM runs (faster for one model); both agree to float32 rounding (tested).

    Only what the Shakespeare model uses: no initial state, no dropout, unidirectional, no projections.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def forward(self, x: Tensor, hx: Any = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:  # type: ignore[override]
        if hx is not None:
            raise ValueError("LSTM: an initial state is not supported; allowed: hx=None (zeros)")
        weights = [getattr(self, name) for name in self._flat_weights_names]
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        if not any(wrapped(t) for t in (x, *weights)):
            return super().forward(x)
        out, h_n, c_n = x, [], []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = weights[4 * layer:4 * layer + 4]
            xi = (out.flatten(-3, -2) @ w_ih.mT).unflatten(-2, out.shape[-3:-1]) + (b_ih + b_hh)
            out, c, _, _ = _LSTMRecurrence.apply(xi, w_hh)
            h_n.append(out[..., -1, :])
            c_n.append(c[..., -1, :])
        return out, (torch.stack(h_n), torch.stack(c_n))


class RNN(nn.Module):
    """The LEAF / FedAvg Shakespeare model (FedML's ``RNN_OriginalFedAvg``): character embedding of
    size 8, a 2-layer LSTM with 256 units, dense ``num_classes`` on the last position's output (the
    next character). The LSTM is :class:`LSTM` (``nn.LSTM``'s parameters and state dict keys, and
    ``vmap``-able), so many clients' models evaluate (:func:`batched_loss`) and can train in one
    vectorised pass.

    ``vectorise_on_cpu = False``: on a CPU, this model's copies evaluate one at a time in
    :func:`batched_loss`, and with ``train_args.vectorised_training: null`` the simulator trains its
    clients one per core (``local_sgd_parallel``), not vectorised. PyTorch's fused kernel for one
    model keeps each layer's 1 MB ``W_hh`` in the core's cache for all 80 time steps; a vmapped step
    over k models reads all k ``W_hh`` from memory at every time step. Measured on the 2-core
    development machine: a vmapped training step over 10 clients ~30 GFLOP/s against ~85 GFLOP/s
    for one client per core (``benchmarks/rounds.py``, ``vectorised`` row), and 100 models on
    HeteroFL's 4 trigger windows 1.8-2.0 s vmapped against 0.67 s one at a time.
    ``vectorised_training: true`` trains it vectorised; on a GPU (not measured here) both are
    vectorised.
    """

    vectorise_on_cpu = False

    def __init__(self, vocab_size: int = 80, num_classes: int = 80, embedding_dim: int = 8,
                 hidden_size: int = 256) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = LSTM(embedding_dim, hidden_size, num_layers=2)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embeddings(x))
        return self.fc(out[:, -1])


#: model names of :func:`build_model`
MODELS = ("lr", "cnn", "resnet20", "rnn")


def build_model(name: str, num_classes: int, watermark: bool = False, **kwargs: int) -> nn.Module:
    """The architecture ``name`` with ``num_classes`` outputs, plus one when ``watermark`` (HeteroFL's
    trigger label L = ``num_classes``). ``kwargs`` go to the class (e.g. ``input_dim``, ``vocab_size``).
    The model's ``task_classes`` attribute is L, so evaluation can tell the task's outputs from the
    watermark output."""
    key = name.strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    outputs = num_classes + int(bool(watermark))
    if key == "lr":
        model: nn.Module = LogisticRegression(num_classes=outputs, **kwargs)
    elif key == "cnn":
        model = CNN(num_classes=outputs, **kwargs)
    elif key == "resnet20":
        model = ResNet20(num_classes=outputs)
    else:
        model = RNN(num_classes=outputs, **{"vocab_size": num_classes, **kwargs})
    model.task_classes = num_classes
    return model
