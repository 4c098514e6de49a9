"""Recurrent form: one token at a time, constant memory; what decoding runs."""

import torch


def recurrent_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """Same contract as ``naive_linear_attn``, stepping S_t = exp(g_t) S_{t-1} + k_t v_t^T."""
    dtype = v.dtype
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, K = q.shape
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float().clone()
    outputs = []
    for t in range(T):
        if g is not None:
            state = state * g[:, t].float().exp()[..., None, None]
        state = state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(dtype), (state if output_final_state else None)
