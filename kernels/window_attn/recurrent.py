"""Recurrent form: per token, softmax over the window buffer plus the linear state; evicted tokens fold into the state."""

import torch
import torch.nn.functional as F

from linearize.kernels.window_attn.naive import combine, concat_past, decay_weights, empty_state, fold, softmax_part


def recurrent_window_attn(q, k, fq, fk, v, factor, window, scale, key_mask=None, past=None, initial_state=None, eps=1e-6,
                          log_decay=None, sinks=None):
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
        sm_num, sm_den = softmax_part(q[:, t : t + 1], K[:, lo : i + 1], Vv[:, lo : i + 1],
                                      valid[:, None, None, lo : i + 1], scale, sinks, slice(t, t + 1))
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


def step_window_attn(q, fq, keys, values, factor, window, scale, key_mask=None, initial_state=None, eps=1e-6,
                     log_decay=None, sinks=None, evicted=None, inplace=False):
    """Decode: one query q [B, 1, H, D] (fq [B, 1, H, F] or [B, H, F]) against the window ``keys``, ``values``
    [B, Hkv, N, *] as the cache holds them (head-major, at the key/value heads, the query's own token last,
    N <= window; H = Hkv x G, query head h reads key head h // G, repeat_kv's order): read in place, nothing
    repeated. key_mask: [B, N] or None; sinks as in ``naive_window_attn`` for this query but at the key/value
    heads (visible None: every sink visible). ``evicted``: when N == window, the feature-mapped first key
    [B, H, F], which leaves the window into the state (aged window - 1 steps); None otherwise. Equals
    ``recurrent_window_attn`` on the last token with the first N - 1 as ``past``. factor: the window's share per
    head, [H] or [H, 1].
    A decode step's time is its op count, views included (a view costs a third of a small product): every
    product is one bmm over B * Hkv groups of G query rows on 3D views, and the values carry the normaliser's
    column of ones, so one bmm gives the window's numerator and denominator and one lerp mixes both with the
    linear part's.
    ``inplace``: decay and update an fp32 ``initial_state`` in place and return it (a decode cache's state,
    without autograd: the state is the step's largest tensor, and the cache would copy a new one back into it)."""
    B, Hkv, N, D = keys.shape
    H, Vd, Fd = q.shape[2], values.shape[-1], fq.shape[-1]
    G, dtype = H // Hkv, values.dtype
    if dtype != torch.float32:
        q, fq, keys, values = q.float(), fq.float(), keys.float(), values.float()
    K, V = keys.reshape(B * Hkv, N, D), values.reshape(B * Hkv, N, Vd)
    qg = q.reshape(B * Hkv, G, D) * scale  # the G query heads that read each key head
    scores = torch.bmm(qg, K.transpose(1, 2))  # [B * Hkv, G, N]
    allowed = None if key_mask is None else key_mask.bool()
    if sinks is not None:
        k_s, v_s, visible = sinks[0].float(), sinks[1].float(), sinks[2]
        S = k_s.shape[1]
        scores = torch.cat([scores, torch.bmm(qg, k_s.transpose(1, 2).reshape(B * Hkv, S, D).transpose(1, 2))], -1)
        if visible is not None:  # None: every sink visible
            window_ok = scores.new_ones(B, N, dtype=torch.bool) if allowed is None else allowed
            allowed = torch.cat([window_ok, visible[:, 0].bool()], -1)  # [B, N + S]
        elif allowed is not None:
            allowed = torch.cat([allowed, allowed.new_ones(B, S)], -1)
        V = torch.cat([V, v_s.transpose(1, 2).reshape(B * Hkv, S, Vd)], 1)
    V1 = F.pad(V, (0, 1), value=1.0)  # [value, 1]: numerator and denominator
    if allowed is None:  # the query's own key is always there: the row's max is finite
        p = (scores - scores.amax(-1, keepdim=True)).exp_()
    else:
        scores = scores.view(B, H, -1).masked_fill(~allowed[:, None], float("-inf")).view(B * Hkv, G, -1)
        p = (scores - scores.amax(-1, keepdim=True).nan_to_num(neginf=0.0)).exp_()  # no allowed key: zeros
    state = fq.new_zeros(B, H, Fd, Vd + 1, dtype=torch.float32) if initial_state is None else initial_state.float()
    if log_decay is not None:  # now at the time of this query
        decay = log_decay.float().exp()[None, :, None, None]
        state = state.mul_(decay) if inplace else state * decay
    linear = torch.bmm(fq.reshape(B * H, 1, Fd), state.view(B * H, Fd, Vd + 1))  # [B * H, 1, V + 1]
    # a * window + (1 - a) * linear, numerator and denominator at once
    a = factor.float() if factor.dim() == 2 else factor.float()[:, None]  # [H, 1]: broadcasts over the batch
    mixed = torch.lerp(linear.view(B, H, Vd + 1), torch.bmm(p, V1).view(B, H, Vd + 1), a)
    o = (mixed[..., :Vd] / (mixed[..., Vd:] + eps)).view(B, 1, H, Vd)
    if evicted is not None:  # the oldest key leaves the window: into the state, aged window - 1 steps
        fk = evicted.float()
        if key_mask is not None:
            fk = fk * key_mask[:, 0, None, None]
        if log_decay is not None:
            fk = fk * (log_decay.float() * (window - 1)).exp()[None, :, None]
        # Each key head's value goes to its G query heads' states: [B * Hkv, G * F, V + 1] views, no repeat.
        outer = (fk.reshape(B * Hkv, G * Fd, 1), V1[:, :1])
        flat = state.view(B * Hkv, G * Fd, Vd + 1)
        if inplace:
            flat.baddbmm_(*outer)
        else:
            state = torch.baddbmm(flat, *outer).view(B, H, Fd, Vd + 1)
    return o.to(dtype), state
