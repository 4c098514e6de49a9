"""Chunked form: exact attention inside a chunk, a carried state between chunks (O(T * C) memory)."""

import torch


def chunk_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False, chunk_size=64):
    """Same contract as ``naive_linear_attn``; the state passes from chunk to chunk."""
    dtype = v.dtype
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, K = q.shape
    V = v.shape[-1]
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    outputs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start : start + chunk_size] for x in (q, k, v))
        C = qc.shape[1]
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        scores = torch.einsum("bthk,bshk->bhts", qc, kc) * scale
        if g is None:
            intra = scores.masked_fill(~causal, 0.0)
            oc = torch.einsum("bhts,bshv->bthv", intra, vc) + torch.einsum("bthk,bhkv->bthv", qc * scale, state)
            state = state + torch.einsum("bshk,bshv->bhkv", kc, vc)
        else:
            Gc = g[:, start : start + chunk_size].float().cumsum(1)  # [B, C, H]
            Gh = Gc.transpose(1, 2)
            log_decay = (Gh[..., :, None] - Gh[..., None, :]).masked_fill(~causal, float("-inf"))
            intra = scores * log_decay.exp()
            inter = torch.einsum("bthk,bhkv->bthv", qc * scale, state) * Gc[..., None].exp()
            oc = torch.einsum("bhts,bshv->bthv", intra, vc) + inter
            last = Gh[..., -1]  # [B, H]
            kw = kc * (last[:, None, :] - Gc)[..., None].exp()
            state = state * last[..., None, None].exp() + torch.einsum("bshk,bshv->bhkv", kw, vc)
        outputs.append(oc)
    o = torch.cat(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    return o.to(dtype), (state if output_final_state else None)
