"""Recurrent gated delta rule: one token at a time (decode)."""

import torch


def recurrent_gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """Same contract as ``chunk_gated_delta``."""
    dtype = v.dtype
    q, k, v, beta = q.float() * scale, k.float(), v.float(), beta.float()
    B, T, H, K = q.shape
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float().clone()
    outputs = []
    for t in range(T):
        if g is not None:
            state = state * g[:, t].float().exp()[..., None, None]
        kt = k[:, t]
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, state))
        state = state + kt[..., None] * u[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    o = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(dtype), (state if output_final_state else None)
