"""Models of the paper's four workloads and flat-parameter helpers.

Flat parameters: a model's trainable parameters in a fixed order (``model.named_parameters()``),
concatenated into one vector of length ``d``. Buffers (BatchNorm running statistics) are not part
of the vector: updates and defenses never see them.

``batched_loss`` evaluates ``k`` flat parameter vectors on one batch in a single vectorised pass
(``torch.func.functional_call`` + ``vmap``), which HeteroFL's watermark verification (Alg. 5) and
Zeno use instead of a Python loop over models.
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
            chunks of 16 and 0.66 s in chunks of 64 (smaller activations, fewer page faults).
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

    # PyTorch has no batching rule for nn.LSTM: such models (``vmappable = False``) go one at a time.
    step = chunk if getattr(model, "vmappable", True) else 1
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


class CNN(nn.Module):
    """FedML's ``CNN_DropOut`` (Reddi et al., "Adaptive Federated Optimization"): two 3×3 convolutions
    (32, 64), 2×2 max-pooling, dropout 0.25, dense 128, dropout 0.5, dense ``num_classes``; 28×28
    inputs. FedML's class ignores ``output_dim`` (10 or 62 only); ours takes any ``num_classes``."""

    def __init__(self, num_classes: int = 62, in_channels: int = 1) -> None:
        super().__init__()
        self.conv2d_1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.conv2d_2 = nn.Conv2d(32, 64, kernel_size=3)
        self.max_pooling = nn.MaxPool2d(2, stride=2)
        self.dropout_1 = nn.Dropout(0.25)
        self.linear_1 = nn.Linear(9216, 128)
        self.dropout_2 = nn.Dropout(0.5)
        self.linear_2 = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, self.conv2d_1.in_channels, 28, 28)
        x = torch.relu(self.conv2d_1(x))
        x = self.max_pooling(torch.relu(self.conv2d_2(x)))
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


class RNN(nn.Module):
    """The LEAF / FedAvg Shakespeare model (FedML's ``RNN_OriginalFedAvg``): character embedding of
    size 8, a 2-layer LSTM with 256 units, dense ``num_classes`` on the last position's output (the
    next character).

    ``vmappable = False``: ``torch.func.vmap`` has no batching rule for ``nn.LSTM``, so
    :func:`batched_loss` evaluates this model's parameter vectors one at a time.
    """

    vmappable = False

    def __init__(self, vocab_size: int = 80, num_classes: int = 80, embedding_dim: int = 8,
                 hidden_size: int = 256) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=2, batch_first=True)
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
