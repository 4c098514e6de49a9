"""Chunked gated delta rule.

Within a chunk, with G the cumulative log gate and S0 the state entering it, the per-token updates
u_t = beta_t (v_t - k_t^T exp(g_t) S_{t-1}) satisfy the unit lower-triangular system

    u_t + beta_t sum_{s<t} exp(G_t - G_s) (k_t . k_s) u_s = beta_t (v_t - exp(G_t) k_t^T S0)

so U = Ub - W S0 with Ub, W from one triangular solve; then S_C = exp(G_C) S0 + sum_s exp(G_C - G_s) k_s u_s^T.
"""

import torch


def chunk_gated_delta(q, k, v, beta, g=None, scale=1.0, initial_state=None, output_final_state=False, chunk_size=64):
    """q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V]; beta: [B, T, H] in [0, 1];
    g: log gates [B, T, H] or None; initial_state [B, H, K, V]. Returns (o, final state or None)."""
    dtype = v.dtype
    q, k, v, beta = q.float() * scale, k.float(), v.float(), beta.float()
    B, T, H, K = q.shape
    g = torch.zeros(B, T, H, device=q.device) if g is None else g.float()
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float().clone()
    outputs = []
    for start in range(0, T, chunk_size):
        sl = slice(start, start + chunk_size)
        qc, kc, vc, bc = (x[:, sl].transpose(1, 2) for x in (q, k, v, beta))  # [B, H, C, *]
        G = g[:, sl].transpose(1, 2).cumsum(-1)  # [B, H, C]
        C = G.shape[-1]
        strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
        decay = (
            (G[..., :, None] - G[..., None, :])
            .masked_fill(~(strict | torch.eye(C, dtype=torch.bool, device=q.device)), float("-inf"))
            .exp()
        )  # exp(G_t - G_s), s <= t
        A = (bc[..., None] * (kc @ kc.transpose(-1, -2)) * decay).masked_fill(~strict, 0.0)
        L = A + torch.eye(C, device=q.device)
        Ub = torch.linalg.solve_triangular(L, bc[..., None] * vc, upper=False, unitriangular=True)
        W = torch.linalg.solve_triangular(L, (bc * G.exp())[..., None] * kc, upper=False, unitriangular=True)
        U = Ub - W @ state
        o = (qc @ kc.transpose(-1, -2) * decay) @ U + (qc * G.exp()[..., None]) @ state
        state = state * G[..., -1, None, None].exp() + (kc * (G[..., -1:] - G).exp()[..., None]).transpose(-1, -2) @ U
        outputs.append(o.transpose(1, 2))
    o = torch.cat(outputs, 1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(dtype), (state if output_final_state else None)
