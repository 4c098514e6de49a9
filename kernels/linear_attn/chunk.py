"""Chunked form: exact attention inside each chunk, one state per chunk, and the states carried across chunks by
one product with the chunk-to-chunk decays (as Mamba-2's minimal SSD does), so a prefill runs a fixed number of
ops whatever its length. Gates per key dimension (GLA) keep a loop over chunks: their in-chunk decays would be a
[T, C, K] tensor per head at once (fla's chunk_gla serves them on CUDA)."""

import torch
import torch.nn.functional as F

from linearize.kernels.linear_attn.naive import as_key_gate, decayed_scores
from linearize.kernels.ssd.chunk import segment_sum


def chunk_linear_attn(q, k, v, g=None, scale=1.0, initial_state=None, output_final_state=False, chunk_size=64):
    """Same contract as ``naive_linear_attn``; the state passes from chunk to chunk."""
    gk = None if g is None else as_key_gate(g)
    if gk is not None and gk.shape[-1] > 1:
        return _chunk_loop(q, k, v, gk, scale, initial_state, output_final_state, chunk_size)
    dtype = v.dtype
    q, k, v = q.float() * scale, k.float(), v.float()
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = max(1, min(chunk_size, T))
    pad = -T % C
    n = (T + pad) // C
    # Padding at the end is inert: zero keys add nothing to the state and a zero log gate decays nothing.
    qb, kb, vb = (F.pad(x, (0, 0, 0, 0, 0, pad)).view(B, n, C, H, -1) for x in (q, k, v))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    flat = (B * n, C, H)
    if gk is None:
        o = torch.einsum(
            "bhts,bshv->bthv", decayed_scores(qb.view(*flat, K), kb.view(*flat, K), None, causal), vb.view(*flat, V)
        ).view(B, n, C, H, V)
        own = torch.einsum("bnshk,bnshv->bnhkv", kb, vb)  # each chunk's keys and values
        carried = F.pad(own.cumsum(1)[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))  # the sum over earlier chunks (a shift, not
        # a subtraction: padded rows' huge cotangents would not cancel exactly)
        if initial_state is not None:
            carried = carried + initial_state.float()[:, None]
        o = o + torch.einsum("bnthk,bnhkv->bnthv", qb, carried)
        final = None
        if output_final_state:
            final = own.sum(1) if initial_state is None else initial_state.float() + own.sum(1)
        return o.reshape(B, n * C, H, V)[:, :T].to(dtype), final
    G = F.pad(gk[..., 0], (0, 0, 0, pad)).view(B, n, C, H).cumsum(2)  # log decay from each chunk's start
    o = torch.einsum(
        "bhts,bshv->bthv",
        decayed_scores(qb.view(*flat, K), kb.view(*flat, K), G.view(*flat, 1), causal),
        vb.view(*flat, V),
    ).view(B, n, C, H, V)
    last = G[:, :, -1]  # [B, n, H]: each chunk's whole decay
    own = torch.einsum("bnshk,bnshv->bnhkv", kb * (last[:, :, None] - G).exp()[..., None], vb)  # at the chunk's end
    # State entering chunk i: sum over chunks j < i of own_j decayed through chunks j+1 .. i-1, and the initial
    # state through chunks 0 .. i-1; the exponents are masked sums, never differences of large partial sums.
    ends = F.pad(last.transpose(1, 2), (1, 0))  # [B, H, n + 1]: slot 0 stands for the initial state
    decay = segment_sum(ends).exp()  # [B, H, n + 1, n + 1]: decay[i, j] = exp(ends[j + 1] + ... + ends[i])
    sources = torch.cat(
        [(q.new_zeros(B, 1, H, K, V) if initial_state is None else initial_state.float()[:, None]), own], 1
    )
    states = torch.einsum("bhij,bjhkv->bihkv", decay, sources)  # [B, n + 1, H, K, V]: entering chunk i; last: final
    o = o + torch.einsum("bnthk,bnhkv->bnthv", qb * G.exp()[..., None], states[:, :-1])
    return o.reshape(B, n * C, H, V)[:, :T].to(dtype), (states[:, -1] if output_final_state else None)


def _chunk_loop(q, k, v, gk, scale, initial_state, output_final_state, chunk_size):
    """Gates per key dimension: chunk after chunk."""
    dtype = v.dtype
    q, k, v = q.float() * scale, k.float(), v.float()
    B, T, H, K = q.shape
    V = v.shape[-1]
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    outputs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start : start + chunk_size] for x in (q, k, v))
        C = qc.shape[1]
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        Gc = gk[:, start : start + chunk_size].cumsum(1)  # [B, C, H, K], restarted each chunk
        oc = torch.einsum("bhts,bshv->bthv", decayed_scores(qc, kc, Gc, causal), vc)
        oc = oc + torch.einsum("bthk,bhkv->bthv", qc * Gc.exp(), state)
        last = Gc[:, -1]  # [B, H, K]
        kw = kc * (last[:, None] - Gc).exp()
        state = state * last[..., None].exp() + torch.einsum("bshk,bshv->bhkv", kw, vc)
        outputs.append(oc)
    o = torch.cat(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    return o.to(dtype), (state if output_final_state else None)
