"""Recurrent form of Mamba-2's scan: one token at a time, what a decode step runs. The state is kept in float32
whatever the inputs' dtype (as Mamba-2's own step keeps ``ssm_state``)."""

import torch


def ssd_step(C, B, x, dt, A_log, D, state=None):
    """One token: C, B [b, h, n]; x [b, h, p]; dt [b, h] > 0; A_log, D [h]; state [b, h, n, p] (None: zeros).
    Returns (y [b, h, p] in x's dtype, the new state [b, h, n, p] in float32); ``state`` is not changed in place,
    so autograd may run through the step."""
    x32, dt = x.float(), dt.float()
    written = (B.float() * dt[..., None])[..., :, None] * x32[..., None, :]  # dt B x^T
    if state is not None:
        decay = torch.exp(dt * -torch.exp(A_log.float()))  # exp(dt A), A = -exp(A_log)
        written = written + decay[..., None, None] * state.float()
    y = (C.float()[..., None, :] @ written).squeeze(-2) + D.float()[:, None] * x32
    return y.to(x.dtype), written


def recurrent_ssd(C, B, x, dt, A_log, D, initial_state=None, output_final_state=False):
    """Same contract as ``naive_ssd``: ``ssd_step`` over the tokens (a decode step is T = 1)."""
    state, ys = initial_state, []
    for t in range(x.shape[1]):
        y, state = ssd_step(C[:, t], B[:, t], x[:, t], dt[:, t], A_log, D, state)
        ys.append(y)
    if state is None:  # no tokens and no initial state
        state = x.new_zeros(x.shape[0], x.shape[2], B.shape[-1], x.shape[-1], dtype=torch.float32)
    y = torch.stack(ys, 1) if ys else x.new_zeros(x.shape[0], 0, *x.shape[2:])
    return y, (state.float() if output_final_state else None)
