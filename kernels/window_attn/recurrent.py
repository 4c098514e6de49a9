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
    """Decode: one query q [B, 1, H, D] (fq [B, 1, H, F]) against the window ``keys``, ``values`` [B, N, Hkv, *] with
    the query's own token last (N <= window), at the key/value heads as the cache holds them (H = Hkv x G; query
    head h reads key head h // G, repeat_kv's order): views of the cache's [B, Hkv, N, *] tensors are read in
    place, nothing is repeated or concatenated. key_mask: [B, N] or None; sinks as in ``naive_window_attn`` for
    this query but at the key/value heads. ``evicted``: when N == window, the feature-mapped first key [B, H, F],
    which leaves the window into the state (aged window - 1 steps); None otherwise. Equals
    ``recurrent_window_attn`` on the last token with the first N - 1 as ``past``.
    A decode step's time is its op count, views included: every product is one bmm over B * Hkv groups of G
    query rows on 3D views (matmul's broadcasting of 4D operands costs more views than the product).
    ``inplace``: decay and update an fp32 ``initial_state`` in place and return it (a decode cache's state,
    without autograd: the state is the step's largest tensor, and the cache would copy a new one back into it)."""
    B, N, Hkv, D = keys.shape
    H = q.shape[2]
    G, BH = H // Hkv, B * H

    def groups(x):  # [B, N, Hkv, *] -> [B * Hkv, N, *] in fp32: a view of the cache's head-major tensors
        return x.transpose(1, 2).reshape(B * Hkv, x.shape[1], x.shape[3]).float()

    K, V = groups(keys), groups(values)
    qg = q.reshape(B * Hkv, G, D).float() * scale  # the G query heads that read each key head
    scores = torch.bmm(qg, K.transpose(1, 2))  # [B * Hkv, G, N]
    if sinks is not None:
        k_s, v_s, visible = sinks
        scores = torch.cat([scores, torch.bmm(qg, groups(k_s).transpose(1, 2))], -1)
        window_ok = scores.new_ones(B, N, dtype=torch.bool) if key_mask is None else key_mask.bool()
        allowed = torch.cat([window_ok, visible[:, 0].bool()], -1)  # [B, N + S]
        V = torch.cat([V, groups(v_s)], 1)
    else:
        allowed = None if key_mask is None else key_mask.bool()
    if allowed is None:  # the query's own key is always there: the row's max is finite
        p = (scores - scores.amax(-1, keepdim=True)).exp_()
    else:
        scores = scores.view(B, Hkv * G, -1).masked_fill(~allowed[:, None], float("-inf")).view(B * Hkv, G, -1)
        p = (scores - scores.amax(-1, keepdim=True).nan_to_num(neginf=0.0)).exp_()  # no allowed key: zeros
    Vd = V.shape[-1]
    Fd = fq.shape[-1]
    state = fq.new_zeros(B, H, Fd, Vd + 1, dtype=torch.float32) if initial_state is None else initial_state.float()
    if log_decay is not None:  # now at the time of this query
        decay = log_decay.float().exp()[None, :, None, None]
        state = state.mul_(decay) if inplace else state * decay
    linear = torch.bmm(fq.reshape(BH, 1, Fd).float(), state.view(BH, Fd, Vd + 1))  # [BH, 1, V + 1]
    a = factor.float()[None].expand(B, H).reshape(BH, 1, 1)
    num = torch.lerp(linear[..., :Vd], torch.bmm(p, V).view(BH, 1, Vd), a)  # a * softmax + (1 - a) * linear
    den = torch.lerp(linear[..., Vd:], p.sum(-1, keepdim=True).view(BH, 1, 1), a)
    o = (num / (den + eps)).view(B, 1, H, Vd)
    if evicted is not None:  # the oldest key leaves the window: into the state, aged window - 1 steps
        fk = evicted.float()
        if key_mask is not None:
            fk = fk * key_mask[:, 0, None, None]
        if log_decay is not None:
            fk = fk * (log_decay.float() * (window - 1)).exp()[None, :, None]
        # Each key head's value goes to its G query heads' states: [B * Hkv, G * F, V + 1] views, no repeat.
        v1 = F.pad(values[:, 0].float(), (0, 1), value=1.0)  # [B, Hkv, V + 1]: the value and the normaliser's 1
        outer = (fk.reshape(B * Hkv, G * Fd, 1), v1.reshape(B * Hkv, 1, Vd + 1))
        flat = state.view(B * Hkv, G * Fd, Vd + 1)
        state = (flat.baddbmm_(*outer) if inplace else torch.baddbmm(flat, *outer)).view(B, H, Fd, Vd + 1)
    return o.to(values.dtype), state
