"""A ``vmap``-able LSTM for the Shakespeare model: :class:`LSTM` is ``nn.LSTM`` (same parameters and
state dict) whose layers, under a ``torch.func`` transform, run :class:`_LSTMRecurrence` — the
recurrence in plain torch ops with a hand-written backward pass through time."""
from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor, nn


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
    computed by :class:`_LSTMRecurrence` from ``torch`` ops: many clients' RNNs can be evaluated
    (:func:`~fedml_heterofl.models.flat.batched_loss`) and trained in one ``vmap`` (on a CPU both are
    slower than one model at a time, see :class:`~fedml_heterofl.models.architectures.RNN`). On plain
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
