"""Label-flipping attack (HeteroFL paper §VII-A): every training label ``y`` of a malicious client
becomes ``L − y − 1`` (``L`` real classes). HeteroFL's trigger samples, labelled ``L`` (Alg. 1,
line 3), keep their label: a label outside ``0..L−1`` is left as it is.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from fedml_heterofl.attack.base import DataAttack, register


@register
class LabelFlip(DataAttack):
    """``y → L − y − 1`` for ``0 ≤ y < L`` (module doc). ``num_classes`` is ``L``."""

    name = "label_flip"

    def __init__(self, *, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    def poison(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        if y.is_floating_point():
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        real = (y >= 0) & (y < self.num_classes)
        return x, torch.where(real, self.num_classes - 1 - y, y)
