"""Naive form of Mamba-2's scan: the recurrence written out, one token at a time (the reference the other forms
are checked against, as fla's ``naive.py`` files are)."""

import torch


def naive_ssd(C, B, x, dt, A_log, D, initial_state=None, output_final_state=False):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t, with A = -exp(A_log).

    C, B: [b, t, h, n]; x: [b, t, h, p]; dt: [b, t, h] (already positive); A_log, D: [h]; initial_state:
    [b, h, n, p]. Returns (y [b, t, h, p] in x's dtype, final state [b, h, n, p] in float32 or None)."""
    b, T, heads, p = x.shape
    A = -torch.exp(A_log.float())
    h = x.new_zeros(b, heads, B.shape[-1], p, dtype=torch.float32) if initial_state is None else initial_state.float()
    ys = []
    for t in range(T):
        dt_t, B_t, C_t, x_t = dt[:, t].float(), B[:, t].float(), C[:, t].float(), x[:, t].float()
        decay = torch.exp(dt_t * A)  # [b, h]
        h = decay[:, :, None, None] * h + torch.einsum("bh,bhn,bhp->bhnp", dt_t, B_t, x_t)
        ys.append(torch.einsum("bhn,bhnp->bhp", C_t, h) + D.float()[None, :, None] * x_t)
    y = torch.stack(ys, 1) if ys else x.new_zeros(b, 0, heads, p, dtype=torch.float32)
    return y.to(x.dtype), (h if output_final_state else None)
