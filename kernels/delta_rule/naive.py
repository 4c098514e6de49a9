"""Naive form of the gated delta rule: the recurrence written out, one token at a time (the reference the other
forms are checked against, as fla's ``recurrent_gated_delta_rule_ref`` is)."""

import torch


def naive_gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """S_t = exp(g_t) S_{t-1}; S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T; o_t = scale * S_t^T q_t.

    q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V]; beta: [B, T, H]; g: log gates [B, T, H]
    or None; initial_state: [B, H, K, V]. Returns (o [B, T, H, V] in v's dtype, final state in float32 or None)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    S = q.new_zeros(B, H, K, V, dtype=torch.float32) if initial_state is None else initial_state.float()
    outputs = []
    for t in range(T):
        q_t, k_t, v_t, beta_t = q[:, t].float(), k[:, t].float(), v[:, t].float(), beta[:, t].float()
        if g is not None:
            S = S * torch.exp(g[:, t].float())[:, :, None, None]
        error = v_t - torch.einsum("bhkv,bhk->bhv", S, k_t)  # what the state predicts for k_t, against v_t
        S = S + torch.einsum("bh,bhk,bhv->bhkv", beta_t, k_t, error)
        outputs.append(scale * torch.einsum("bhkv,bhk->bhv", S, q_t))
    o = torch.stack(outputs, 1) if outputs else v.new_zeros(B, 0, H, V, dtype=torch.float32)
    return o.to(v.dtype), (S if output_final_state else None)
