"""Chunked form of Mamba-2's scan, as Mamba-2's own "minimal SSD" algorithm writes it (and transformers' torch
fallback for Mamba-2 and GraniteMoeHybrid copies it): exact quadratic attention inside each chunk with the decays
exp(segsum(dt*A)), one state per chunk, a scan over the chunk states. The same operations in the same order and
chunk size as that fallback, so a converted model and its GraniteMoeHybrid export (``convert.export_native``)
round alike on CPU: SmolLM2-sized models amplify a one-ulp change in the scan to ~3e-4 in the logits."""

import torch
import torch.nn.functional as F

CHUNK_SIZE = 256  # GraniteMoeHybrid's (and Mamba-2's) default mamba_chunk_size, which export keeps


def segment_sum(x):
    """[..., T] -> [..., T, T] with out[..., i, j] = x[..., j+1] + ... + x[..., i] for i >= j, -inf above the
    diagonal (masked cumulative sums: no subtraction of large partial sums)."""
    T = x.size(-1)
    x = x[..., None].expand(*x.size(), T)
    x = x.masked_fill(~torch.tril(torch.ones(T, T, device=x.device, dtype=torch.bool), diagonal=-1), 0)
    x = torch.cumsum(x, dim=-2)
    return x.masked_fill(~torch.tril(torch.ones(T, T, device=x.device, dtype=torch.bool), diagonal=0), -torch.inf)


def _chunks(x, pad, chunk_size):
    """[b, t, h(, d)] -> [b, c, chunk_size, h(, d)], zero-padded at the end."""
    x = F.pad(x, (0, 0, 0, 0, 0, pad) if x.dim() == 4 else (0, 0, 0, pad))
    return x.reshape(x.shape[0], -1, chunk_size, *x.shape[2:])


def chunk_ssd(C, B, x, dt, A_log, D, initial_state=None, output_final_state=False, chunk_size=CHUNK_SIZE):
    """Same contract as ``dispatch.ssd``: C, B [b, t, h, n], x [b, t, h, p], dt [b, t, h] (already positive),
    A_log, D [h], initial_state [b, h, n, p]. Computes in float32 (einsum letters: c chunk, l and s positions in
    a chunk, h head, p head_dim, n state)."""
    dtype = x.dtype
    b, T, h, p = x.shape
    A = -torch.exp(A_log.float())
    x, B, C = x.float(), B.float(), C.float()
    pad = (chunk_size - T % chunk_size) % chunk_size
    D_residual = D.float()[..., None] * F.pad(x, (0, 0, 0, 0, 0, pad))
    x = x * dt[..., None].float()  # the values, discretised
    A = A * dt.float()  # the per-step log decays
    x, A, B, C = (_chunks(t, pad, chunk_size) for t in (x, A, B, C))
    A = A.permute(0, 3, 1, 2)  # [b, h, c, l]
    A_cumsum = torch.cumsum(A, dim=-1)

    # Inside each chunk: attention weights C_l . B_s times the decay from s to l.
    L = torch.exp(segment_sum(A))
    G = torch.einsum("bclhn,bcshn->bclsh", C, B)
    M = G * L.permute(0, 2, 3, 4, 1)
    Y_diag = torch.einsum("bclsh,bcshp->bclhp", M, x)

    # Each chunk's own state (decayed to its end), then the states carried across chunks.
    decay_states = torch.exp(A_cumsum[:, :, :, -1:] - A_cumsum)
    B_decay = B * decay_states.permute(0, -2, -1, 1)[..., None]
    states = torch.einsum("bclhn,bclhp->bchpn", B_decay, x)
    previous = (
        initial_state.float().transpose(-1, -2)[:, None]
        if initial_state is not None
        else torch.zeros_like(states[:, :1])
    )  # [b, 1, h, p, n]
    states = torch.cat([previous, states], dim=1)
    decay_chunk = torch.exp(segment_sum(F.pad(A_cumsum[:, :, :, -1], (1, 0)))).transpose(1, 3)
    new_states = torch.einsum("bzch,bzhpn->bchpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]

    # What the carried state adds at each position.
    C_times_states = torch.einsum("bclhn,bchpn->bclhp", C, states)
    Y_off = C_times_states * torch.exp(A_cumsum).permute(0, 2, 3, 1)[..., None]

    y = (Y_diag + Y_off).contiguous().reshape(b, -1, h, p)
    y = (y + D_residual)[:, :T]
    return y.to(dtype), (final_state.transpose(-1, -2).contiguous() if output_final_state else None)
