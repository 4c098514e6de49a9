"""Parallel form of the sliding-window + linear hybrid (the reference), and the pieces all forms share."""

import torch

from linearize.kernels.linear_attn.dispatch import with_ones


def concat_past(past, *new):
    """Prepend the previous window (one [B, P, H, *] per tensor: k, fk, v, or k, v) to the new tokens."""
    if past is None:
        return new
    return tuple(torch.cat([p.to(x.dtype), x], dim=1) for p, x in zip(past, new))


def empty_state(fk, v):
    """The zero linear state [B, H, F, V + 1]."""
    return fk.new_zeros(fk.shape[0], fk.shape[2], fk.shape[3], v.shape[3] + 1, dtype=torch.float32)


def fold(state, fk, v, weight=None):
    """Add keys fk [B, N, H, F] with values v into the linear state [B, H, F, V + 1] (last column: normaliser),
    each key scaled by ``weight`` [N, H] where given (its decay to the state's reference time)."""
    fk, v = fk.float(), v.float()
    if weight is not None:
        fk = fk * weight[None, :, :, None]
    update = torch.einsum("bnhf,bnhv->bhfv", fk, with_ones(v))
    return update if state is None else state.float() + update


def decay_weights(log_decay, distance):
    """exp(log_decay[h] * distance[n]) as [N, H]: how much a key ``distance`` tokens old still counts."""
    return (distance.float()[:, None] * log_decay.float()[None, :]).exp()


def combine(sm_num, sm_den, lin_num, lin_den, factor, eps):
    """Mix the two parts per head; factor [H] in (0, 1); *_num [B, T, H, V], *_den [B, T, H]."""
    a = factor.float()[:, None]
    num = a * sm_num + (1 - a) * lin_num
    den = factor.float() * sm_den + (1 - factor.float()) * lin_den
    return num / (den[..., None] + eps)


def softmax_output(num, den, dtype):
    """The window's softmax alone, num / den, in ``dtype``. The row's maximum key counts exp(0) = 1, so a row that sees
    a key has den >= 1 and the clamp changes nothing; a row that sees none (padding) gives zeros, not NaN."""
    return (num / den.clamp_min(1.0)[..., None]).to(dtype)


def window_softmax(scores, allowed):
    """exp(s - max) over allowed keys; rows with no allowed key give zeros instead of NaN."""
    scores = scores.masked_fill(~allowed, float("-inf"))
    m = scores.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return (scores - m).exp()


def softmax_part(q, K, V, allowed, scale, sinks=None, rows=slice(None)):
    """The window's softmax numerator [B, t, H, V] and denominator [B, t, H] for queries q [B, t, H, D] over
    keys K, V [B, s, H, *] where ``allowed`` [B | 1, 1, t, s], plus the sink keys (``sinks``: k [B, S, H, D],
    v [B, S, H, V], visible [B, T, S], of which the query rows ``rows``) in the same softmax."""
    scores = torch.einsum("bthd,bshd->bhts", q.float(), K.float()) * scale
    V = V.float()
    if sinks is not None:
        k_s, v_s, visible = sinks
        scores = torch.cat([scores, torch.einsum("bthd,bshd->bhts", q.float(), k_s.float()) * scale], -1)
        allowed = torch.cat([allowed.expand(q.shape[0], 1, *allowed.shape[2:]), visible[:, None, rows]], -1)
        V = torch.cat([V, v_s.float()], 1)
    p = window_softmax(scores, allowed)
    return torch.einsum("bhts,bshv->bthv", p, V), p.sum(-1).transpose(1, 2)


def naive_window_attn(
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
    log_decay=None,
    sinks=None,
):
    """q, k: [B, T, H, D] (rotary applied); fq, fk: [B, T, H, F] feature-mapped; v: [B, T, H, V].

    past: (k, fk, v) of the previous window or None; key_mask: [B, P + T] bool validity of past and new
    keys (None: all valid); initial_state: linear state [B, H, F, V + 1] of the tokens before the window.
    log_decay: [H] log of a per-head decay (<= 0) or None: in the linear part a key j counts
    exp(log_decay * (i - j)) for query i, so old tokens fade and the state stays the same size in
    effect however long the sequence (the window's softmax is not decayed). The state is kept at the
    time of the last query: the next call's first query sees it decayed once more.
    sinks: (k [B, S, H, D], v [B, S, H, V], visible [B, T, S] bool) or None: keys every query may also see
    through the softmax (StreamingLLM's attention sinks: the sequence's first tokens, kept apart by the
    caller and left out of ``key_mask`` so they count once and never enter the linear state).
    Returns (o [B, T, H, V], state with every token that left the window).
    """
    dtype = v.dtype
    K, FK, Vv = concat_past(past, k, fk, v)
    K, FK, Vv, q, fq = K.float(), FK.float(), Vv.float(), q.float(), fq.float()
    B, N, H, _ = K.shape
    T = q.shape[1]
    P = N - T
    valid = torch.ones(B, N, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    FK = FK * valid[..., None, None]
    qi = torch.arange(P, N, device=q.device)[:, None]  # absolute positions of the queries
    kj = torch.arange(N, device=q.device)[None, :]
    in_window = (kj <= qi) & (kj > qi - window)
    is_old = kj <= qi - window
    sm_num, sm_den = softmax_part(q, K, Vv, in_window & valid[:, None, None, :], scale, sinks)
    lin = torch.einsum("bthf,bshf->bhts", fq, FK).masked_fill(~is_old, 0.0)
    if log_decay is not None:
        lin = lin * (log_decay.float()[:, None, None] * (qi - kj).clamp(min=0)).exp()
    lin_num = torch.einsum("bhts,bshv->bthv", lin, Vv)
    lin_den = lin.sum(-1).transpose(1, 2)
    if initial_state is not None:
        carried = torch.einsum("bthf,bhfv->bthv", fq, initial_state.float())
        if log_decay is not None:
            carried = carried * decay_weights(log_decay, torch.arange(1, T + 1, device=q.device))[None, :, :, None]
        lin_num, lin_den = lin_num + carried[..., :-1], lin_den + carried[..., -1]
    o = combine(sm_num, sm_den, lin_num, lin_den, factor, eps)
    n_out = max(N - (window - 1), 0)  # tokens that no later query sees through the window
    state = initial_state.float() if initial_state is not None else empty_state(FK, Vv)
    weight = None
    if log_decay is not None:
        state = state * decay_weights(log_decay, torch.tensor([T], device=q.device))[0][None, :, None, None]
        weight = decay_weights(log_decay, N - 1 - torch.arange(n_out, device=q.device))
    if n_out:
        state = fold(state, FK[:, :n_out], Vv[:, :n_out], weight)
    return o.to(dtype), state


def naive_window_softmax(q, k, v, window, scale, key_mask=None, past=None, sinks=None):
    """The window's softmax alone, for a recurrence that joins it by mixing outputs (Liger's way) instead of through
    a shared normaliser: each query attends to its last ``window`` keys and the sinks. q, k: [B, T, H, D] (rotary
    applied); v: [B, T, H, V]; past: (k, v) of the previous window or None; key_mask, sinks: as
    ``naive_window_attn`` takes them. Returns o [B, T, H, V]."""
    K, Vv = concat_past(past, k, v)
    N, T = K.shape[1], q.shape[1]
    valid = torch.ones(K.shape[0], N, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    qi = torch.arange(N - T, N, device=q.device)[:, None]
    kj = torch.arange(N, device=q.device)[None, :]
    in_window = (kj <= qi) & (kj > qi - window)
    num, den = softmax_part(q, K, Vv, in_window & valid[:, None, None, :], scale, sinks)
    return softmax_output(num, den, v.dtype)
