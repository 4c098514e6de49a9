"""LoLA's sparse cache beside the window (McDermott et al., 2025, "LoLA: Low-Rank Linear Attention With Sparse
Caching"): of the keys that left the window, the ``budget`` per head that the linear state would recall worst stay
exact, in the softmax beside the window and the sinks; the rest fold into the state as before.

A key-value pair's self-recall error against the state [S | z] is || v - f(k) S / f(k) z ||^2: large when the state,
queried with the pair's own key, would not give its value back (a passkey among prose is the example). Selection
runs a chunk at a time at absolute positions: after the queries of chunk [s, s + C), the cache and the keys that
left the window during the chunk are scored against the state at the chunk's last query; the ``budget`` worst
recalled stay, the rest fold in (with their decay since their own position). Between selections, a key that has
left the window but not yet been scored is read linearly (the chunk's pending keys), as the plain hybrid reads it.

Form: chunk-recurrent (a loop over chunks), the reference.
"""

import torch

from linearize.kernels.linear_attn.dispatch import with_ones
from linearize.kernels.window_attn.naive import combine, empty_state


def recall_error(fk, v, state, eps=1e-6):
    """|| v - f(k) S / f(k) z ||^2 for keys fk [B, H, n, F], values v [B, H, n, V] against state [B, H, F, V + 1]."""
    read = torch.einsum("bhnf,bhfv->bhnv", fk, state)
    return (v - read[..., :-1] / (read[..., -1:] + eps)).pow(2).sum(-1)


def sparse_window_attn(
    q,
    k,
    fq,
    fk,
    v,
    factor,
    window,
    scale,
    budget,
    key_mask=None,
    eps=1e-6,
    log_decay=None,
    sinks=None,
    chunk_size=64,
    groups=1,
    select="error",
):
    """``naive_window_attn``'s contract from the start of a sequence (no past, no initial state), with a sparse cache
    of ``budget`` keys per key/value head: ``groups`` query heads share a key head (repeat_kv's order) and its cache,
    chosen by their scores' sum. ``select``: the score, 'error' (LoLA's self-recall error against the state at the
    selection) or 'attention' (the softmax share a key has received from every query that saw it, in the window or in
    the cache: heavy hitters, as H2O keeps KV). Returns (o [B, T, H, V], (state, cache)) where cache = (positions
    [B, H, budget] (-1: empty), k, fk, v at the query heads [B, H, budget, *])."""
    dtype = v.dtype
    q, k, fq, fk, v = (x.float() for x in (q, k, fq, fk, v))
    B, T, H, D = q.shape
    C, W = chunk_size, window
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    fk = fk * valid[..., None, None]
    kh, fkh, vh = (x.transpose(1, 2) for x in (k, fk, v))  # head-major [B, H, T, *]
    ld = None if log_decay is None else log_decay.float()[None, :, None]  # [1, H, 1]
    state = empty_state(fk, v)
    t_state = -1  # the time the state is kept at
    pos = torch.full((B, H, budget), -1, dtype=torch.long, device=q.device)
    ck, cfk, cv = (x.new_zeros(B, H, budget, x.shape[-1]) for x in (kh, fkh, vh))
    if select not in ("error", "attention"):
        raise ValueError(f"unknown sparse-cache selection {select!r}; use error or attention")
    received, cache_received = q.new_zeros(B, H, T), q.new_zeros(B, H, budget)  # select='attention'
    sink_k = sink_v = None
    if sinks is not None:
        sink_k, sink_v, sink_visible = (x.float() if x.is_floating_point() else x for x in sinks)
    outputs = []
    for s in range(0, T, C):
        e = min(s + C, T)
        qs, fqs = q[:, s:e].transpose(1, 2), fq[:, s:e].transpose(1, 2)  # [B, H, c, *]
        qi = torch.arange(s, e, device=q.device)[:, None]
        lo = max(0, s - W + 1)  # first key any query of the chunk sees through the window or as pending
        kj = torch.arange(lo, e, device=q.device)[None, :]
        in_window = (kj <= qi) & (kj > qi - W) & valid[:, None, lo:e]  # [B, c, n]
        pending = kj <= qi - W  # left the window during the chunk, not yet scored (every such key is >= lo)
        # softmax: window, sinks, cache
        scores = [torch.einsum("bhcd,bhnd->bhcn", qs, kh[:, :, lo:e]).masked_fill(~in_window[:, None], float("-inf"))]
        values = [vh[:, :, lo:e]]
        if sink_k is not None:
            ss = torch.einsum("bhcd,bshd->bhcs", qs, sink_k).masked_fill(~sink_visible[:, None, s:e], float("-inf"))
            scores.append(ss)
            values.append(sink_v.transpose(1, 2).expand(B, H, -1, -1))
        scores.append(torch.einsum("bhcd,bhnd->bhcn", qs, ck).masked_fill((pos < 0)[:, :, None], float("-inf")))
        values.append(cv)
        scores = torch.cat(scores, -1) * scale
        m = scores.amax(-1, keepdim=True)
        p = (scores - torch.where(torch.isfinite(m), m, torch.zeros_like(m))).exp()
        sm = torch.einsum("bhcn,bhnv->bhcv", p, with_ones(torch.cat(values, 2)))
        if select == "attention":
            share = p / sm[..., -1:].clamp_min(1e-30)
            received[:, :, lo:e] += share[..., : e - lo].sum(2)
            cache_received += share[..., share.shape[-1] - budget :].sum(2)
        # linear: the state (decayed to each query) and the pending keys
        lin = torch.einsum("bhcf,bhnf->bhcn", fqs, fkh[:, :, lo:e]).masked_fill(~pending, 0.0)
        carried = torch.einsum("bhcf,bhfv->bhcv", fqs, state)
        if ld is not None:
            lin = lin * (ld[..., None] * (qi - kj).clamp(min=0)).exp()
            carried = carried * (ld * (qi[:, 0] - t_state)).exp()[..., None]
        ln = torch.einsum("bhcn,bhnv->bhcv", lin, with_ones(vh[:, :, lo:e])) + carried
        o = combine(sm[..., :-1], sm[..., -1], ln[..., :-1], ln[..., -1], factor[:, None], eps)  # [B, H, c, V]
        outputs.append(o.transpose(1, 2))
        # selection at the chunk's last query: candidates are the cache and the keys that left the window in it
        t = e - 1
        if ld is not None:
            state = state * (ld * (t - t_state))[..., None].exp()
        t_state = t
        new = torch.arange(max(0, s - W + 1), max(0, e - W + 1), device=q.device)
        if len(new) == 0:
            continue
        cand_pos = torch.cat([pos, new.expand(B, H, -1)], -1)
        cand_k = torch.cat([ck, kh[:, :, new]], 2)
        cand_fk = torch.cat([cfk, fkh[:, :, new]], 2)
        cand_v = torch.cat([cv, vh[:, :, new]], 2)
        ok = torch.cat([pos >= 0, valid[:, None, new].expand(B, H, -1)], -1)
        if select == "error":
            err = recall_error(cand_fk, cand_v, state, eps)
        else:
            err = torch.cat([cache_received, received[:, :, new]], -1)
        err = err.view(B, H // groups, groups, -1).sum(2).repeat_interleave(groups, 1).masked_fill(~ok, float("-inf"))
        keep = err.topk(budget, -1).indices  # [B, H, budget]
        kept = torch.zeros_like(ok).scatter(-1, keep, True) & ok
        out = ok & ~kept  # fold these
        weight = out.float()
        if ld is not None:
            weight = weight * (ld * (t - cand_pos).clamp(min=0)).exp()
        state = state + torch.einsum("bhnf,bhnv->bhfv", cand_fk * weight[..., None], with_ones(cand_v))
        gather = lambda x: x.gather(2, keep[..., None].expand(-1, -1, -1, x.shape[-1]))  # noqa: E731
        pos = torch.where(kept.gather(-1, keep), cand_pos.gather(-1, keep), -1)
        if select == "attention":
            cache_received = torch.cat([cache_received, received[:, :, new]], -1).gather(-1, keep)
        ck, cfk, cv = gather(cand_k), gather(cand_fk), gather(cand_v)
    return torch.cat(outputs, 1).to(dtype), (state, (pos, ck, cfk, cv))
