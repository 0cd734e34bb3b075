"""Update screening, before any rule sees a round's updates: the shape check of the ``(n, d)`` tensor
and the removal of malformed rows (NaN/Inf entries, zero norm), reported under
``removed_by["non_finite"]`` / ``removed_by["zero_norm"]``."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor

from fedml_heterofl.defense.rows import Rows


def check_updates(updates: Tensor, d: Optional[int] = None) -> None:
    """Raise ``ValueError`` unless ``updates`` is a floating ``(n, d)`` tensor (``d`` if given)."""
    if not isinstance(updates, Tensor):
        raise ValueError(f"updates must be a torch.Tensor of shape (n, d), got {type(updates).__name__}")
    if updates.dim() != 2:
        raise ValueError(f"updates must have shape (n, d), got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be a floating-point tensor, got dtype {updates.dtype}")
    if d is not None and updates.shape[1] != d:
        raise ValueError(f"updates have length {updates.shape[1]}, the model has d={d} parameters")


def screen_rows(rows: Rows) -> Tuple[Tensor, Dict[str, Tensor]]:
    """``(index of the valid rows, {"non_finite": idx, "zero_norm": idx})`` (keys only when non-empty).

    A row is valid when all its entries are finite and its norm is not zero; a finite row whose float32
    norm overflows is valid (:meth:`Rows.screen <fedml_heterofl.defense.rows.Rows.screen>`)."""
    finite, nonzero = rows.screen()
    removed: Dict[str, Tensor] = {}
    if not bool(finite.all()):
        removed["non_finite"] = (~finite).nonzero().flatten()
    if not bool((nonzero | ~finite).all()):
        removed["zero_norm"] = (~nonzero & finite).nonzero().flatten()
    return (finite & nonzero).nonzero().flatten(), removed
