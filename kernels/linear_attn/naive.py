"""Parallel (quadratic) form of causal decayed linear attention: the reference the others are checked against."""

import torch


def naive_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """o_t = scale * sum_{s<=t} exp(G_t - G_s) (q_t . k_s) v_s + scale * exp(G_t) q_t S_0, with G = cumsum(g).

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: log decay per step [B, T, H] or None; initial_state: [B, H, K, V].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] in float32 or None).
    """
    dtype = v.dtype
    q, k, v = q.float(), k.float(), v.float()
    T = q.shape[1]
    scores = torch.einsum("bthk,bshk->bhts", q, k) * scale
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if g is None:
        weights = scores.masked_fill(~causal, 0.0)
        G = None
    else:
        G = g.float().cumsum(1).transpose(1, 2)  # [B, H, T]
        log_decay = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf"))
        weights = scores * log_decay.exp()
    o = torch.einsum("bhts,bshv->bthv", weights, v)
    if initial_state is not None:
        carried = torch.einsum("bthk,bhkv->bthv", q * scale, initial_state.float())
        if G is not None:
            carried = carried * G.transpose(1, 2)[..., None].exp()
        o = o + carried
    final = None
    if output_final_state:
        if G is None:
            kw = k
            final = 0 if initial_state is None else initial_state.float()
        else:
            kw = k * (G[..., -1:] - G).transpose(1, 2)[..., None].exp()
            final = 0 if initial_state is None else initial_state.float() * G[..., -1, None, None].exp()
        final = final + torch.einsum("bshk,bshv->bhkv", kw, v)
    return o.to(dtype), final
