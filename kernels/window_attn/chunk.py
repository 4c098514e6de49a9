"""Chunked form: the window's softmax as one banded product (each block of queries against its band of keys, all
blocks at once), and the linear part as chunked linear attention over keys delayed by ``window`` (the key a query
stops seeing through the window is the one it starts seeing linearly). The number of ops does not grow with the
length; memory grows linearly ([T, block + window - 1] scores per head)."""

import torch
import torch.nn.functional as F

from linearize.kernels.linear_attn.dispatch import linear_attn, with_ones
from linearize.kernels.window_attn.naive import combine, concat_past, decay_weights, fold, softmax_output


def chunk_window_attn(
    q,
    k,
    fq,
    fk,
    v,
    factor,
    window,
    scale,
    key_mask=None,
    past=None,
    initial_state=None,
    eps=1e-6,
    chunk_size=64,
    linear_mode="auto",
    log_decay=None,
    sinks=None,
):
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
    # Sliced even when empty (every key still in the window): the key feature map then gets its true gradient, zero,
    # not none, as data-parallel training and transformers' gradient checks expect of every trainable parameter.
    shift = min(window - P, T)
    k_lin = torch.cat([FK.new_zeros(B, shift, H, FK.shape[-1]), FK[:, : T - shift]], dim=1)
    v_lin = torch.cat([Vv.new_zeros(B, shift, H, Vv.shape[-1]), Vv[:, : T - shift]], dim=1).float()
    g = None
    if log_decay is not None:
        g = log_decay.float()[None, None].expand(B, T, H)
        k_lin = k_lin * decay_weights(log_decay, torch.tensor([window], device=q.device))[0][None, None, :, None]
    # In the run's dtype: fla takes bf16 inputs and keeps its states in float32 (the torch forms compute in float32).
    carried, state = linear_attn(
        fq,
        k_lin.to(fq.dtype),
        with_ones(v_lin).to(fq.dtype),
        g=g,
        scale=1.0,
        initial_state=initial_state,
        output_final_state=True,
        mode=linear_mode,
    )
    carried = carried.float()
    lin_num, lin_den = carried[..., :-1], carried[..., -1]
    # The state must also hold the one key that leaves the window after the last query.
    last_out = N - window
    if last_out >= 0:
        weight = None if log_decay is None else decay_weights(log_decay, torch.tensor([window - 1], device=q.device))
        state = fold(state, FK[:, last_out : last_out + 1], Vv[:, last_out : last_out + 1], weight)
    sm_num, sm_den = banded_softmax_part(q, K, Vv, valid, window, scale, sinks, chunk_size)
    o = combine(sm_num, sm_den, lin_num, lin_den, factor, eps)
    return o.to(dtype), state


def chunk_window_softmax(q, k, v, window, scale, key_mask=None, past=None, sinks=None, chunk_size=64):
    """Same contract as ``naive_window_softmax``: the banded product of the hybrid's window, alone."""
    K, Vv = concat_past(past, k, v)
    valid = torch.ones(K.shape[:2], dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    num, den = banded_softmax_part(q, K, Vv, valid, window, scale, sinks, chunk_size)
    return softmax_output(num, den, v.dtype)


def banded_softmax_part(q, K, V, valid, window, scale, sinks=None, block=64):
    """``softmax_part`` for queries q [B, T, H, D] that are the last T of the keys K, V [B, N, H, *] (valid [B, N]),
    each seeing the ``window`` keys up to itself and the sinks (as ``softmax_part`` takes them). Queries go in
    blocks of ``block``; block i's band is the block + window - 1 keys ending at its last query, an unfold of the
    key stream (a view), so all blocks are one batched product. The scores and the values' product run in the
    inputs' dtype, the softmax's statistics and the denominator in float32."""
    B, T, H, D = q.shape
    C = max(1, min(block, T))
    pad = -T % C
    n = (T + pad) // C
    L = C + window - 1
    lead = window - 1 - (K.shape[1] - T)  # keys the stream lacks before the first query's window (< 0: spare)

    def stream(x):  # the keys from the first query's window on, padded to whole blocks: [B, window - 1 + T + pad, ...]
        x = x[:, max(-lead, 0) :]
        return F.pad(x, (0, 0) * (x.dim() - 2) + (max(lead, 0), pad))

    qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(B, n, C, H, D)
    Kb = stream(K.to(q.dtype)).unfold(1, L, C)  # [B, n, H, D, L]
    Vb = stream(V.to(q.dtype)).unfold(1, L, C)
    keep = stream(valid.to(q.dtype)[..., None, None])[..., 0, 0].unfold(1, L, C) > 0  # [B, n, L]
    i = torch.arange(C, device=q.device)[:, None]
    j = torch.arange(L, device=q.device)[None, :]
    allowed = ((j >= i) & (j < i + window))[None, None, None] & keep[:, :, None, None, :]  # [B, n, 1, C, L]
    # The sinks join the band's softmax through a shared row maximum, not a concatenation (two fewer copies).
    scores = (torch.einsum("bnchd,bnhdl->bnhcl", qb, Kb).float() * scale).masked_fill(~allowed, float("-inf"))
    m = scores.amax(-1, keepdim=True)
    if sinks is not None:
        k_s, v_s, visible = sinks
        visible = F.pad(visible, (0, 0, 0, pad)).view(B, n, 1, C, -1)
        sink_scores = torch.einsum("bnchd,bshd->bnhcs", qb, k_s.to(q.dtype)).float() * scale
        sink_scores = sink_scores.masked_fill(~visible, float("-inf"))
        m = torch.maximum(m, sink_scores.amax(-1, keepdim=True))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a row that sees no key gives zeros, not NaN
    p = (scores - m).exp()  # [B, n, H, C, L]
    num = torch.einsum("bnhcl,bnhvl->bnchv", p.to(q.dtype), Vb)
    den = p.sum(-1)
    if sinks is not None:
        p = (sink_scores - m).exp()
        num = num + torch.einsum("bnhcs,bshv->bnchv", p.to(q.dtype), v_s.to(q.dtype))
        den = den + p.sum(-1)
    den = den.transpose(2, 3)  # [B, n, C, H]
    return num.reshape(B, n * C, H, -1)[:, :T].float(), den.reshape(B, n * C, H)[:, :T]
