"""The architectures of the paper's four workloads (Lu, Hu et al., IEEE TIFS 2024, §VII): logistic
regression and a CNN on 28×28 grey images, ResNet-20 on CIFAR-10, an LSTM on Shakespeare.

``num_classes`` is L; ``watermark=True`` adds HeteroFL's (L+1)-th output for the trigger label L
(Alg. 1, line 3). Layer shapes equal FedML 0.9.6's models (``fedml/model/linear/lr.py``,
``fedml/model/cv/cnn.py``, ``fedml/model/cv/resnet.py``, ``fedml/model/nlp/rnn.py``), so the parameter
counts match (checked in tests against FedML's classes).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fedml_heterofl.models.dropout import Dropout
from fedml_heterofl.models.lstm import LSTM


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
    inputs. FedML's class ignores ``output_dim`` (10 or 62 only); ours takes any ``num_classes``.

    The same function as FedML's, computed faster on CPU (``benchmarks/rounds.py``): the convolution
    weights are ``channels_last`` (oneDNN's NHWC kernels; the parameters' values and shapes, the flat
    vector and the state dict are unchanged); the second ReLU comes after the max-pooling
    (``maxpool(relu(z)) = relu(maxpool(z))`` exactly, gradients included, on 4× fewer entries); the
    dropout masks come from :class:`~fedml_heterofl.models.dropout.Dropout`.

    ``vectorise_on_cpu = False``: on a CPU its copies evaluate one at a time in
    :func:`~fedml_heterofl.models.flat.batched_loss` (100 CNNs, 2 threads: on 32 images 0.75 s one at a
    time, 1.66 s vmapped; on HeteroFL's 4 trigger images 0.16 s either way).
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


class RNN(nn.Module):
    """The LEAF / FedAvg Shakespeare model (FedML's ``RNN_OriginalFedAvg``): character embedding of
    size 8, a 2-layer LSTM with 256 units, dense ``num_classes`` on the last position's output (the
    next character). The LSTM is :class:`~fedml_heterofl.models.lstm.LSTM` (``nn.LSTM``'s parameters and
    state dict keys, and ``vmap``-able), so many clients' models evaluate
    (:func:`~fedml_heterofl.models.flat.batched_loss`) and can train in one vectorised pass.

    ``vectorise_on_cpu = False``: on a CPU, this model's copies evaluate one at a time in
    :func:`~fedml_heterofl.models.flat.batched_loss`, and with ``train_args.vectorised_training: null``
    the simulator trains its clients one per core, not vectorised. PyTorch's fused kernel for one
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
