"""Mamba-2's selective scan, h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t: linear
attention with queries C, keys dt*B, values x and a per-head log decay dt*A, so it runs on the same
forms (``linear_attn``: the torch forms, fla's simple-GLA on CUDA), except the torch chunked form: Mamba-2's own
(``chunk.chunk_ssd``), which rounds as transformers' Mamba-2 layers do."""

import torch

from linearize.kernels.forms import fla_gated_backward_refused, resolve_mode
from linearize.kernels.linear_attn.dispatch import TORCH_FORMS, fla_simple_gla, linear_attn
from linearize.kernels.ssd.chunk import chunk_ssd


def ssd(C, B, x, dt, A_log, D, initial_state=None, output_final_state=False, mode="auto"):
    """C, B: [b, t, h, n]; x: [b, t, h, p]; dt: [b, t, h] > 0; A_log, D: [h]. Returns (y, state [b, h, n, p])."""
    g = -torch.exp(A_log.float()) * dt.float()
    kernels = fla_simple_gla() if C.is_cuda else None
    if mode == "auto" and fla_gated_backward_refused(C, B, x, g):
        kernels = None
    if resolve_mode(mode, C, kernels, TORCH_FORMS, "ssd") == "chunk":
        return chunk_ssd(C, B, x, dt, A_log, D, initial_state, output_final_state)
    y, state = linear_attn(C, B * dt[..., None].to(B.dtype), x, g=g, scale=1.0, initial_state=initial_state,
                           output_final_state=output_final_state, mode=mode)
    return y + D.to(y.dtype)[:, None] * x, state
