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


def step_window_attn(q, fq, keys, fkeys, values, factor, window, scale, key_mask=None, initial_state=None, eps=1e-6,
                     log_decay=None, sinks=None):
    """Decode: one query q [B, 1, H, D] (fq [B, 1, H, F]) against ``keys``, ``fkeys``, ``values`` [B, N, H, *], the
    window with the query's own token last (N <= window), as the cache holds it: views of the cache's
    [B, H, N, *] tensors are read in place, nothing is concatenated. key_mask: [B, N] or None; sinks as in
    ``naive_window_attn`` for this query. Equals ``recurrent_window_attn`` on the last token with the first
    N - 1 as ``past``, in a few batched ops instead of per-token Python (decode latency is op overhead)."""
    N = keys.shape[1]
    K, V = keys.float().transpose(1, 2), values.float().transpose(1, 2)  # [B, H, N, *]
    qh = q.float().transpose(1, 2) * scale  # [B, H, 1, D]
    scores = qh @ K.transpose(-1, -2)  # [B, H, 1, N]
    allowed = None if key_mask is None else key_mask.bool()[:, None, None, :]
    if sinks is not None:
        k_s, v_s, visible = sinks
        scores = torch.cat([scores, qh @ k_s.float().transpose(1, 2).transpose(-1, -2)], -1)
        window_ok = scores.new_ones(scores.shape[0], 1, 1, N, dtype=torch.bool) if allowed is None else allowed
        allowed = torch.cat([window_ok, visible[:, None].bool()], -1)
        V = torch.cat([V, v_s.float().transpose(1, 2)], 2)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    p = (scores - scores.amax(-1, keepdim=True).nan_to_num(neginf=0.0)).exp()  # no allowed key: zeros
    softmax = p @ F.pad(V, (0, 1), value=1.0)  # [B, H, 1, V + 1]: numerator and sum, like the state's columns
    state = empty_state(fkeys, values) if initial_state is None else initial_state.float()
    if log_decay is not None:
        state = state * log_decay.float().exp()[None, :, None, None]  # now at the time of this query
    linear = fq.float().transpose(1, 2) @ state  # [B, H, 1, V + 1]
    mixed = torch.lerp(linear, softmax, factor.float()[None, :, None, None])  # a * softmax + (1 - a) * linear
    o = (mixed[..., :-1] / (mixed[..., -1:] + eps)).transpose(1, 2)
    if N == window:  # the oldest key leaves the window: into the state, aged window - 1 steps
        fk = fkeys[:, 0].float()
        if key_mask is not None:
            fk = fk * key_mask[:, 0, None, None]
        if log_decay is not None:
            fk = fk * (log_decay.float() * (window - 1)).exp()[None, :, None]
        state = state + fk[..., None] * F.pad(values[:, 0].float(), (0, 1), value=1.0)[..., None, :]
    return o.to(values.dtype), state
