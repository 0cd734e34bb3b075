"""A value's identity: SHA-256 of a canonical text of it (a run's settings, a checkpoint's contents)."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch


def fingerprint(value: Any) -> str:
    """SHA-256 (hex) of a canonical text of ``value``: mappings by sorted key, every number exactly
    (floats by ``repr``, so NaN, inf, -0.0 and a float's last bit count, and ``1`` differs from
    ``1.0``), tensors by dtype, shape and bytes. Equal fingerprints mean equal values."""
    digest = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, Mapping):
            digest.update(b"{")
            for key in sorted(v, key=str):
                feed(str(key))
                feed(v[key])
            digest.update(b"}")
        elif isinstance(v, (list, tuple)):
            digest.update(b"[")
            for item in v:
                feed(item)
            digest.update(b"]")
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            digest.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
            digest.update(t.flatten().view(torch.uint8).numpy().tobytes())
        else:  # str, int, float, bool, None: type and repr
            digest.update(f"{type(v).__name__}:{v!r};".encode())

    feed(value)
    return digest.hexdigest()
