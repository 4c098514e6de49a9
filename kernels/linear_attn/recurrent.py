"""Recurrent form: one token at a time, constant memory; what decoding runs."""

import torch

from linearize.kernels.linear_attn.naive import as_key_gate


def recurrent_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """Same contract as ``naive_linear_attn``, stepping S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T."""
    dtype = v.dtype
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, K = q.shape
    gk = None if g is None else as_key_gate(g)
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float().clone()
    outputs = []
    for t in range(T):
        if gk is not None:
            state = state * gk[:, t, :, :, None].exp()
        state = state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(dtype), (state if output_final_state else None)
