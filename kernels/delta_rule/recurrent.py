"""Recurrent form of the gated delta rule: one token at a time, what a decode step runs; the state is kept in
float32 whatever the inputs' dtype."""

import torch


def gated_delta_step(q, k, v, beta, g=None, scale=1.0, state=None):
    """One token: q, k [B, H, K]; v [B, H, V]; beta [B, H]; g [B, H] or None; state [B, H, K, V] (None: zeros).
    Returns (o [B, H, V] in v's dtype, the new state [B, H, K, V] in float32); ``state`` is not changed in place,
    so autograd may run through the step."""
    k, v32, beta = k.float(), v.float(), beta.float()[..., None]
    if state is None:
        state = k[..., :, None] * (beta * v32)[..., None, :]
    else:
        state = state.float()
        read = (k[..., None, :] @ state).squeeze(-2)  # k^T S_{t-1}, read before the decay (the two commute)
        if g is not None:
            decay = torch.exp(g.float())[..., None]
            read, state = read * decay, state * decay[..., None]
        update = beta * (v32 - read)
        state = state + k[..., :, None] * update[..., None, :]
    o = ((q.float() * scale)[..., None, :] @ state).squeeze(-2)
    return o.to(v.dtype), state


def recurrent_gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """Same contract as ``naive_gated_delta``: ``gated_delta_step`` over the tokens (a decode step is T = 1)."""
    B, T, H, K = q.shape
    state, outputs = initial_state, []
    for t in range(T):
        o, state = gated_delta_step(q[:, t], k[:, t], v[:, t], beta[:, t], None if g is None else g[:, t], scale, state)
        outputs.append(o)
    if state is None:  # no tokens and no initial state
        state = q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float32)
    o = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o, (state.float() if output_final_state else None)
