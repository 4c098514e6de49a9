"""Chunked form: banded softmax per block of queries, and the linear part as chunked linear attention over
keys delayed by ``window`` (the key a query stops seeing through the window is the one it starts seeing linearly)."""

import torch

from linearize.kernels.linear_attn.dispatch import linear_attn, with_ones
from linearize.kernels.window_attn.naive import combine, concat_past, decay_weights, fold, softmax_part


def chunk_window_attn(q, k, fq, fk, v, factor, window, scale, key_mask=None, past=None, initial_state=None,
                      eps=1e-6, chunk_size=64, linear_mode="auto", log_decay=None, sinks=None):
    """Same contract as ``naive_window_attn``. With a decay the delayed key stream runs through decayed
    linear attention (one gate per head and step); a key enters it ``window`` steps late, so it is
    pre-scaled by that much decay."""
    dtype = v.dtype
    K, FK, Vv = concat_past(past, k, fk, v)
    B, N, H, _ = K.shape
    T = q.shape[1]
    P = N - T
    valid = torch.ones(B, N, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    FK = FK.float() * valid[..., None, None]
    # Linear part: query i (absolute P + i) sees keys up to P + i - window, i.e. the key stream shifted by window.
    shift = window - P
    if shift >= T:
        k_lin = FK.new_zeros(B, T, H, FK.shape[-1])
        v_lin = Vv.new_zeros(B, T, H, Vv.shape[-1]).float()
    else:
        k_lin = torch.cat([FK.new_zeros(B, shift, H, FK.shape[-1]), FK[:, : T - shift]], dim=1)
        v_lin = torch.cat([Vv.new_zeros(B, shift, H, Vv.shape[-1]), Vv[:, : T - shift]], dim=1).float()
    g = None
    if log_decay is not None:
        g = log_decay.float()[None, None].expand(B, T, H)
        k_lin = k_lin * decay_weights(log_decay, torch.tensor([window], device=q.device))[0][None, None, :, None]
    carried, state = linear_attn(fq.float(), k_lin, with_ones(v_lin), g=g, scale=1.0, initial_state=initial_state,
                                 output_final_state=True, mode=linear_mode)
    carried = carried.float()
    lin_num, lin_den = carried[..., :-1], carried[..., -1]
    # The state must also hold the one key that leaves the window after the last query.
    last_out = N - window
    if last_out >= 0:
        weight = None if log_decay is None else decay_weights(log_decay, torch.tensor([window - 1], device=q.device))
        state = fold(state, FK[:, last_out : last_out + 1], Vv[:, last_out : last_out + 1], weight)
    # Softmax part, one block of queries at a time over its band of keys.
    sm_num, sm_den = [], []
    for start in range(0, T, chunk_size):
        stop = min(start + chunk_size, T)
        lo = max(0, P + start - window + 1)
        qi = torch.arange(P + start, P + stop, device=q.device)[:, None]
        kj = torch.arange(lo, P + stop, device=q.device)[None, :]
        allowed = ((kj <= qi) & (kj > qi - window))[None] & valid[:, None, lo : P + stop]
        num, den = softmax_part(q[:, start:stop], K[:, lo : P + stop], Vv[:, lo : P + stop], allowed[:, None], scale,
                                sinks, slice(start, stop))
        sm_num.append(num)
        sm_den.append(den)
    o = combine(torch.cat(sm_num, 1), torch.cat(sm_den, 1), lin_num, lin_den, factor, eps)
    return o.to(dtype), state
