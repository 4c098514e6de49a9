"""Recurrent form: per token, softmax over the window buffer plus the linear state; evicted tokens fold into the state."""

import torch

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
