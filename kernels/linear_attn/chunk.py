"""Chunked form: exact attention inside a chunk, a carried state between chunks (O(T * C) memory)."""

import torch

from linearize.kernels.linear_attn.naive import as_key_gate, decayed_scores


def chunk_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False, chunk_size=64):
    """Same contract as ``naive_linear_attn``; the state passes from chunk to chunk."""
    dtype = v.dtype
    q, k, v = q.float() * scale, k.float(), v.float()
    B, T, H, K = q.shape
    V = v.shape[-1]
    gk = None if g is None else as_key_gate(g)
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    outputs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start : start + chunk_size] for x in (q, k, v))
        C = qc.shape[1]
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        if gk is None:
            oc = torch.einsum("bhts,bshv->bthv", decayed_scores(qc, kc, None, causal), vc)
            oc = oc + torch.einsum("bthk,bhkv->bthv", qc, state)
            state = state + torch.einsum("bshk,bshv->bhkv", kc, vc)
        else:
            Gc = gk[:, start : start + chunk_size].cumsum(1)  # [B, C, H, 1|K], restarted each chunk
            oc = torch.einsum("bhts,bshv->bthv", decayed_scores(qc, kc, Gc, causal), vc)
            oc = oc + torch.einsum("bthk,bhkv->bthv", qc * Gc.exp(), state)
            last = Gc[:, -1]  # [B, H, 1|K]
            kw = kc * (last[:, None] - Gc).exp()
            state = state * last[..., None].exp() + torch.einsum("bshk,bshv->bhkv", kw, vc)
        outputs.append(oc)
    o = torch.cat(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    return o.to(dtype), (state if output_final_state else None)
