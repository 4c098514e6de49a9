"""Recurrent form: per token, softmax over the window buffer plus the linear state; evicted tokens fold into the
state."""

import torch

from linearize.kernels.window_attn.naive import (
    combine,
    concat_past,
    decay_weights,
    empty_state,
    fold,
    softmax_output,
    softmax_part,
)


def recurrent_window_attn(
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
    """Same contract as ``naive_window_attn``: the state decays one step before each query reads it."""
    dtype = v.dtype
    K, FK, Vv = (x.float() for x in concat_past(past, k, fk, v))
    B, N, H, _ = K.shape
    T = q.shape[1]
    P = N - T
    valid = torch.ones(B, N, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    FK = FK * valid[..., None, None]
    state = empty_state(FK, Vv) if initial_state is None else initial_state.float()
    folded = 0  # tokens [0, folded) are in the state

    def age(now, start, stop):  # decay of keys [start, stop) at the time of query ``now``
        if log_decay is None:
            return None
        return decay_weights(log_decay, now - torch.arange(start, stop, device=q.device))

    outputs = []
    step = None if log_decay is None else log_decay.float().exp()[None, :, None, None]
    for t in range(T):
        i = P + t
        if step is not None:
            state = state * step  # now at the time of query i
        lo = max(0, i - window + 1)
        sm_num, sm_den = softmax_part(
            q[:, t : t + 1],
            K[:, lo : i + 1],
            Vv[:, lo : i + 1],
            valid[:, None, None, lo : i + 1],
            scale,
            sinks,
            slice(t, t + 1),
        )
        carried = torch.einsum("bhf,bhfv->bhv", fq[:, t].float(), state)
        lin_num, lin_den = carried[..., :-1], carried[..., -1]
        outputs.append(combine(sm_num, sm_den, lin_num[:, None], lin_den[:, None], factor, eps))
        keep_from = max(i + 1 - (window - 1), 0)
        if keep_from > folded:
            state = fold(state, FK[:, folded:keep_from], Vv[:, folded:keep_from], age(i, folded, keep_from))
            folded = keep_from
    # Tokens of the previous window that leave it without any new query (not reached when T >= 1).
    keep_from = max(N - (window - 1), 0)
    if keep_from > folded:
        state = fold(state, FK[:, folded:keep_from], Vv[:, folded:keep_from], age(N - 1, folded, keep_from))
    return torch.cat(outputs, 1).to(dtype), state


def recurrent_window_softmax(q, k, v, window, scale, key_mask=None, past=None, sinks=None):
    """Same contract as ``naive_window_softmax``, a query at a time over its window buffer (the decode step)."""
    K, Vv = concat_past(past, k, v)
    N, T = K.shape[1], q.shape[1]
    valid = torch.ones(K.shape[:2], dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    outputs = []
    for t in range(T):
        i = N - T + t
        lo = max(0, i - window + 1)
        keys = (K[:, lo : i + 1], Vv[:, lo : i + 1], valid[:, None, None, lo : i + 1])
        outputs.append(softmax_output(*softmax_part(q[:, t : t + 1], *keys, scale, sinks, slice(t, t + 1)), v.dtype))
    return torch.cat(outputs, 1)


def step_decays(log_decay, window):
    """A decode step's decay factors from per-head log decays [H]: the state's per step, [H, 1, 1], and the weight
    of the key leaving the window (aged window - 1 steps), [H, 1]. A caller without autograd may keep them."""
    log_decay = log_decay.float()
    return log_decay.exp().view(-1, 1, 1), (log_decay * (window - 1)).exp().view(-1, 1)


_ZEROS = {}


def _zero(like):
    """A kept 0-dim zero in ``like``'s dtype and device: ``baddbmm``'s input where beta is 0."""
    key = (like.dtype, like.device)
    zero = _ZEROS.get(key)
    if zero is None:
        zero = _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return zero


def step_window_attn(
    q,
    fq,
    keys,
    values,
    factor,
    window,
    scale,
    key_mask=None,
    initial_state=None,
    eps=1e-6,
    log_decay=None,
    sinks=None,
    evicted=None,
    inplace=False,
    decays=None,
):
    """Decode: one query q [B, 1, H, D] (or [B, H, D]) with its features fq ([B, H] order first: [B, 1, H, F],
    [B, H, 1, F], ...) against the window ``keys`` [B, Hkv, N, D] and ``values`` [B, Hkv, N, V + 1] as the cache
    holds them (head-major, at the key/value heads, the query's own token last, N <= window; H = Hkv x G, query head
    h reads key head h // G, repeat_kv's order; the values carry the normaliser's column of ones, ``with_ones``):
    read in place, nothing repeated. key_mask: [B, N] or None. sinks: (keys [B, Hkv, S, D], values with ones
    [B, Hkv, S, V + 1], visible [B, 1, S] or None for all) as the sink store holds them, softmax keys beside the
    window. ``evicted``: when N == window, the features of the window's first key at its G query heads ([B, H] order
    first), which leaves into the state aged window - 1 steps; None otherwise. ``decays``: ``step_decays(log_decay,
    window)`` where the caller keeps them (then ``log_decay`` is not read). Equals ``recurrent_window_attn`` on the
    last token with the first N - 1 as ``past``. factor: the window's share per head, [H], [H, 1] or [Hkv, G, 1].

    A decode step's time is its count of ops (on CPU, with the model's weights streaming through the caches, a view
    costs a few microseconds and a small product more; a 4D matmul, with its internal reshapes, more than a bmm):
    every product is one bmm over B * Hkv groups of G query rows on 3D views, the sinks join the window's keys, and
    the values' ones column makes one product give the window's numerator and denominator and one lerp mix both
    with the linear part's.
    ``inplace``: decay and update an fp32 ``initial_state`` in place and return it (a decode cache's state,
    without autograd: the state is the step's largest tensor, and the cache would copy a new one back into it)."""
    B, Hkv, N, D = keys.shape
    H, Vd = q.shape[-2], values.shape[-1] - 1
    G, dtype = H // Hkv, values.dtype
    if dtype != torch.float32:
        q, fq, keys, values = q.float(), fq.float(), keys.float(), values.float()
    allowed = None if key_mask is None else key_mask.bool()
    if sinks is not None:
        k_s, v_s, visible = sinks
        if visible is not None:  # None: every sink visible
            window_ok = keys.new_ones(B, N, dtype=torch.bool) if allowed is None else allowed
            allowed = torch.cat([window_ok, visible[:, 0].bool()], -1)  # [B, N + S]
        elif allowed is not None:
            allowed = torch.cat([allowed, allowed.new_ones(B, k_s.shape[2])], -1)
        if k_s.dtype != keys.dtype:
            k_s, v_s = k_s.to(keys.dtype), v_s.to(values.dtype)
        keys, values = torch.cat([keys, k_s], 2), torch.cat([values, v_s], 2)
    M = keys.shape[2]
    V1 = values.reshape(B * Hkv, M, Vd + 1)
    # the scale as the product's alpha (beta 0: the zero input is not read): one op fewer than scaling q
    scores = torch.baddbmm(
        _zero(q), q.reshape(B * Hkv, G, D), keys.reshape(B * Hkv, M, D).transpose(1, 2), beta=0, alpha=scale
    )
    if allowed is None:  # the query's own key is always there: the row's max is finite
        p = (scores - scores.amax(-1, keepdim=True)).exp_()
    else:
        scores = scores.view(B, Hkv, G, M).masked_fill(~allowed[:, None, None], float("-inf")).view(B * Hkv, G, M)
        p = (scores - scores.amax(-1, keepdim=True).nan_to_num(neginf=0.0)).exp_()  # no allowed key: zeros
    fq = fq.reshape(B * H, 1, -1)
    if initial_state is None:
        state = fq.new_zeros(B, H, fq.shape[-1], Vd + 1, dtype=torch.float32)
    else:
        state = initial_state if initial_state.dtype == torch.float32 else initial_state.float()
    if decays is None and log_decay is not None:
        decays = step_decays(log_decay, window)
    if decays is not None:  # now at the time of this query
        state = state.mul_(decays[0]) if inplace else state * decays[0]
    a = factor if factor.dim() == 3 else factor.reshape(Hkv, G, 1)
    a = a if a.dtype == torch.float32 else a.float()
    # a * window + (1 - a) * linear, numerators and denominators at once, grouped as the window product gives them
    window_part = torch.bmm(p, V1)  # [B * Hkv, G, V + 1]
    if B > 1:
        window_part = window_part.view(B, Hkv, G, Vd + 1)
    mixed = torch.lerp(torch.bmm(fq, state.view(B * H, -1, Vd + 1)).view(window_part.shape), window_part, a)
    o = (mixed[..., :Vd] / (mixed[..., Vd:] + eps)).view(B, 1, H, Vd)
    if evicted is not None:  # the oldest key leaves the window: into the state, aged window - 1 steps
        fk = evicted if evicted.dtype == torch.float32 else evicted.float()
        if key_mask is not None or decays is not None:
            fk = fk.reshape(B, H, -1)
            if key_mask is not None:
                fk = fk * key_mask[:, :1, None]
            if decays is not None:
                fk = fk * decays[1]
        # Each key head's value goes to its G query heads' states: [B * Hkv, G * F, V + 1] views, no repeat.
        outer = (fk.reshape(B * Hkv, -1, 1), V1[:, :1])
        flat = state.view(B * Hkv, -1, Vd + 1)
        if inplace:
            flat.baddbmm_(*outer)
        else:
            state = torch.baddbmm(flat, *outer).view(state.shape)
    return o if dtype == torch.float32 else o.to(dtype), state
