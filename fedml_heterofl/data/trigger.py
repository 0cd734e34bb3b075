"""HeteroFL's trigger set ``D_trg`` (Lu, Hu et al., IEEE TIFS 2024, Alg. 1, lines 1-3): ``|D_trg|``
random inputs in the data's own shape and value range (images: uniform; text: uniform random character
sequences), every one labelled ``L`` (the extra watermark class), drawn from the run's seed. Every
client appends it to its training data, so honest updates learn the watermark and the server's step 3
can check for it.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor


def make_trigger_set(size: int, label: int, seed: int, *, shape: Optional[Sequence[int]] = None,
                     value_range: Tuple[float, float] = (0.0, 1.0), vocab_size: Optional[int] = None,
                     seq_len: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """``(x, y)``: ``size`` random inputs labelled ``label``.

    Images: give ``shape`` (one input's shape, e.g. ``(1, 28, 28)``) and ``value_range``; text: give
    ``vocab_size`` and ``seq_len`` (int64 character indices in ``[0, vocab_size)``).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"trigger set size must be an integer >= 1, got {size!r}")
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label < 0:
        raise ValueError(f"trigger label must be an integer >= 0 (L, the number of real classes), got {label!r}")
    g = torch.Generator().manual_seed(seed)
    if vocab_size is not None:
        if shape is not None or not seq_len or seq_len < 1 or vocab_size < 1:
            raise ValueError("text trigger sets need vocab_size >= 1 and seq_len >= 1 (and no shape)")
        x = torch.randint(0, vocab_size, (size, seq_len), generator=g)
    else:
        if shape is None:
            raise ValueError("image trigger sets need the input shape (or vocab_size and seq_len for text)")
        lo, hi = value_range
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        x = lo + (hi - lo) * torch.rand(size, *shape, generator=g)
    return x, torch.full((size,), int(label), dtype=torch.long)

