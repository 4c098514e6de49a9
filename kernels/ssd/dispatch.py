"""Mamba-2's selective scan, h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t: linear
attention with queries C, keys dt*B, values x and a per-head log decay dt*A. Its own torch forms (``naive``, a
token loop; ``chunk``, Mamba-2's minimal SSD, which rounds as transformers' Mamba-2 layers do; ``recurrent``, the
decode step) serve CPU; on CUDA it runs as that linear attention on fla's simple-GLA kernels."""

import torch

from linearize.kernels.forms import fla_gated_backward_refused, resolve_mode
from linearize.kernels.linear_attn.dispatch import fla_simple_gla, linear_attn
from linearize.kernels.ssd.chunk import chunk_ssd
from linearize.kernels.ssd.naive import naive_ssd
from linearize.kernels.ssd.recurrent import recurrent_ssd

TORCH_FORMS = {"naive": naive_ssd, "chunk": chunk_ssd, "recurrent": recurrent_ssd}


def ssd(C, B, x, dt, A_log, D, initial_state=None, output_final_state=False, mode="auto"):
    """C, B: [b, t, h, n]; x: [b, t, h, p]; dt: [b, t, h] > 0; A_log, D: [h]. Returns (y, state [b, h, n, p]).

    mode: 'auto' (fla on CUDA, else the chunked form for prefill and the recurrent one for one-token steps),
    'fla', 'naive', 'chunk' or 'recurrent'."""
    g = -torch.exp(A_log.float()) * dt.float()
    kernels = fla_simple_gla() if C.is_cuda else None
    if mode == "auto" and fla_gated_backward_refused(C, B, x, g):
        kernels = None
    form = resolve_mode(mode, C, kernels, TORCH_FORMS, "ssd")
    if form != "fla":
        return TORCH_FORMS[form](C, B, x, dt, A_log, D, initial_state, output_final_state)
    y, state = linear_attn(
        C,
        B * dt[..., None].to(B.dtype),
        x,
        g=g,
        scale=1.0,
        initial_state=initial_state,
        output_final_state=output_final_state,
        mode=mode,
    )
    return y + D.to(y.dtype)[:, None] * x, state
