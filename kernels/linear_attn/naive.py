"""Parallel (quadratic) form of causal decayed linear attention: the reference the others are checked against."""

import torch


def as_key_gate(g):
    """Gates as [B, T, H, 1] (one decay per head) or [B, T, H, K] (one per key dimension, as in GLA)."""
    return g.float()[..., None] if g.dim() == 3 else g.float()


def decayed_scores(q, k, G, causal):
    """A_ts = sum_k q_tk k_sk exp(G_tk - G_sk) for s <= t, else 0; G: cumulative log gates [B, T, H, 1|K]."""
    if G is None:
        return torch.einsum("bthk,bshk->bhts", q, k).masked_fill(~causal, 0.0)
    if G.shape[-1] == 1:
        Gh = G[..., 0].transpose(1, 2)  # [B, H, T]
        log_decay = (Gh[..., :, None] - Gh[..., None, :]).masked_fill(~causal, float("-inf"))
        return torch.einsum("bthk,bshk->bhts", q, k) * log_decay.exp()
    diff = (G[:, :, None] - G[:, None, :]).masked_fill(~causal[None, :, :, None, None], float("-inf"))
    return torch.einsum("bthk,bshk,btshk->bhts", q, k, diff.exp())


def naive_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False):
    """o_t = scale * sum_{s<=t} (q_t * exp(G_t - G_s)) . k_s v_s + scale * (q_t * exp(G_t)) S_0, with G = cumsum(g).

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: log gates [B, T, H] (per head) or [B, T, H, K] (per key
    dimension), or None; initial_state: [B, H, K, V].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] in float32 or None).
    """
    dtype = v.dtype
    q, k, v = q.float() * scale, k.float(), v.float()
    T = q.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    G = None if g is None else as_key_gate(g).cumsum(1)
    o = torch.einsum("bhts,bshv->bthv", decayed_scores(q, k, G, causal), v)
    if initial_state is not None:
        qd = q if G is None else q * G.exp()
        o = o + torch.einsum("bthk,bhkv->bthv", qd, initial_state.float())
    final = None
    if output_final_state:
        final = 0 if initial_state is None else initial_state.float()
        kw = k
        if G is not None:
            kw = k * (G[:, -1:] - G).exp()
            final = final * G[:, -1, :, :, None].exp() if initial_state is not None else 0
        final = final + torch.einsum("bshk,bshv->bhkv", kw, v)
    return o.to(dtype), final
