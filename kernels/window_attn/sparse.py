"""LoLA's sparse cache beside the window (McDermott et al., 2025, "LoLA: Low-Rank Linear Attention With Sparse
Caching"): of the keys that left the window, ``budget`` per head stay exact, in the softmax beside the window and the
sinks; the rest fold into the linear state as before.

Three scores can choose them: 'error', LoLA's self-recall error || v - f(k) S / f(k) z ||^2 against the state
[S | z] (large when the state, queried with the pair's own key, would not give its value back); 'attention', the
softmax share a key has received from every query that saw it, in the window or in the cache (heavy hitters, as H2O
keeps KV; on a trained student with a decay this one finds the passkey, the error does not:
benchmarks/smollm2/recall-cpu); and 'mean', that share divided by the number of queries that saw the key (a summed
share favours the keys already cached, which every later query sees).

Selection runs at fixed positions of each row: after the query at position p with (p + 1) % chunk_size == 0, the
cache and the keys that left the window since the last selection (the pending keys) are scored; the ``budget`` best
stay, the rest fold into the state with their decay since their own position; candidates are the keys the next
query's window no longer holds. Between selections a key that left the window is
read linearly, exactly as the plain hybrid reads it, so budget 0 is the plain hybrid. Because selection depends only
on positions (a row's real tokens, counted from 0, so left padding does not move it), a prefill, a prefill continued
from a carry, and token-by-token decoding give the same outputs.

The carry is three tensors, fixed in shape so a cache can hold them: the linear state [B, H, F, V + 1] kept at the
time of its row's last selection, ``meta`` [B, 2] (that time, the row's next position), and the exact keys
``entries`` [B, H, budget + chunk_size + window, 4 + D + F + V] (position (-1: empty), in-cache flag, received
attention, queries that saw it, k, f(k), v, at the query heads) that hold the window, the pending keys and the cache.

Form: chunk-recurrent (a loop over pieces of at most chunk_size queries, cut at every row's selection), the reference.
"""

import torch

from linearize.kernels.linear_attn.dispatch import with_ones
from linearize.kernels.window_attn.naive import combine

POS, CACHED, RECEIVED, SEEN, FIRST = 0, 1, 2, 3, 4  # the columns of ``entries`` before k, f(k), v


# How the cache chooses: LoLA's self-recall error, the attention a key received (summed, as H2O), or its mean per query
# that saw it.
SELECTIONS = ("error", "attention", "mean")


def recall_error(fk, v, state, eps=1e-6):
    """|| v - f(k) S / f(k) z ||^2 for keys fk [B, H, n, F], values v [B, H, n, V] against state [B, H, F, V + 1]."""
    read = torch.einsum("bhnf,bhfv->bhnv", fk, state)
    return (v - read[..., :-1] / (read[..., -1:] + eps)).pow(2).sum(-1)


def split_entries(entries, D, F):
    """(position, in-cache flag, received attention, k, f(k), v) of ``entries`` (the queries that saw each key, the
    fourth column, are read where the selection needs them)."""
    pos, cached, received = entries[..., POS], entries[..., CACHED] > 0, entries[..., RECEIVED]
    k, fk, v = entries[..., FIRST : FIRST + D], entries[..., FIRST + D : FIRST + D + F], entries[..., FIRST + D + F :]
    return pos, cached, received, k, fk, v


def cached_keys(carry, D, F):
    """The cache's (positions [B, H, n], k, f(k), v) in a carry, in position order per head (n: the most any head
    holds; -1 pads)."""
    pos, cached, _, k, fk, v = split_entries(carry[2], D, F)
    pos = torch.where(cached, pos, -1.0)
    order = pos.argsort(dim=-1, descending=True, stable=True).flip(-1)  # kept ones last, ascending
    n = int(cached.sum(-1).max())
    order = order[..., order.shape[-1] - n :]
    take = lambda x: x.gather(2, order[..., None].expand(-1, -1, -1, x.shape[-1]))  # noqa: E731
    return pos.gather(2, order).long(), take(k), take(fk), take(v)


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
    carry=None,
):
    """``naive_window_attn``'s contract with a sparse cache of ``budget`` keys per key/value head, from the start of the
    sequences or continuing from ``carry`` (what an earlier call returned). q, k [B, T, H, D], fq, fk [B, T, H, F], v
    [B, T, H, V] at the query heads; ``groups`` query heads share a key head (repeat_kv's order) and its cache, chosen
    by their scores' sum. ``key_mask`` [B, T]: the real tokens (left padding only); a row's positions count them from
    0. ``sinks`` = (k [B, S, H, D], v, visible [B, T, S]): the first S positions live there, not in the window.
    Returns (o [B, T, H, V], carry)."""
    if select not in SELECTIONS:
        raise ValueError(f"unknown sparse-cache selection {select!r}; use one of {', '.join(SELECTIONS)}")
    dtype = v.dtype
    q, k, fq, fk, v = (x.float() for x in (q, k, fq, fk, v))
    B, T, H, D = q.shape
    F, V, C, W = fq.shape[-1], v.shape[-1], chunk_size, window
    device = q.device
    valid = torch.ones(B, T, dtype=torch.bool, device=device) if key_mask is None else key_mask.bool()
    ld = None if log_decay is None else log_decay.float()[None, :, None]  # [1, H, 1]
    if carry is None:
        state = q.new_zeros(B, H, F, V + 1)
        meta = torch.zeros(B, 2, dtype=torch.long, device=device)
        entries = q.new_zeros(B, H, 0, FIRST + D + F + V)
    else:
        state, meta, entries = carry
        state, entries = state.float(), entries.float()
    t_state, next_pos = meta[:, 0], meta[:, 1]
    qpos = torch.where(valid, next_pos[:, None] + valid.cumsum(1) - 1, -1)  # [B, T]
    sink_k = sink_v = None
    S = 0
    if sinks is not None:
        sink_k, sink_v, sink_visible = (x.float() if x.is_floating_point() else x for x in sinks)
        S = sink_k.shape[1]
    keyed = valid & (qpos >= S)  # the sinks' positions live in the sink store
    new = torch.cat(
        [
            torch.where(keyed, qpos, -1).float()[..., None, None].expand(B, T, H, 1),
            q.new_zeros(B, T, H, FIRST - 1),
            k,
            fk,
            v,
        ],
        -1,
    ).transpose(1, 2)  # [B, H, T, cols]
    # Pieces: cut after every row's selection point, and at most C queries long.
    boundary = valid & ((qpos + 1) % C == 0)
    cuts = sorted(set((boundary.any(0).nonzero().flatten() + 1).tolist()) | {T})
    pieces, s = [], 0
    for cut in cuts:
        while s < cut:
            pieces.append((s, min(s + C, cut)))
            s = pieces[-1][1]
    outputs = []
    for s, e in pieces:
        entries = torch.cat([entries, new[:, :, s:e]], 2)
        pos, cached, received, ek, efk, ev = split_entries(entries, D, F)
        qp = qpos[:, s:e]  # [B, c]
        qs, fqs = q[:, s:e].transpose(1, 2), fq[:, s:e].transpose(1, 2)  # [B, H, c, *]
        present = (pos >= 0)[:, :, None]  # [B, H, 1, N]
        dist = qp[:, None, :, None] - pos[:, :, None, :]  # [B, H, c, N]
        asks = valid[:, None, s:e, None]  # padding asks nothing
        soft = present & asks & (((dist >= 0) & (dist < W)) | cached[:, :, None])  # the window and the cache
        pending = present & ~cached[:, :, None] & (dist >= W)
        scores = [torch.einsum("bhcd,bhnd->bhcn", qs, ek).masked_fill(~soft, float("-inf"))]
        values = [ev]
        if sink_k is not None:
            ss = torch.einsum("bhcd,bshd->bhcs", qs, sink_k).masked_fill(~sink_visible[:, None, s:e], float("-inf"))
            scores.append(ss)
            values.append(sink_v.transpose(1, 2).expand(B, H, -1, -1))
        scores = torch.cat(scores, -1) * scale
        m = scores.amax(-1, keepdim=True)
        p = (scores - torch.where(torch.isfinite(m), m, torch.zeros_like(m))).exp()
        sm = torch.einsum("bhcn,bhnv->bhcv", p, with_ones(torch.cat(values, 2)))
        if select != "error":
            share = p[..., : pos.shape[-1]] / sm[..., -1:].clamp_min(1e-30)
            entries = entries.clone()  # the views above stay as autograd saved them
            entries[..., RECEIVED] += share.sum(2)
            entries[..., SEEN] += soft.sum(2)
        lin = torch.einsum("bhcf,bhnf->bhcn", fqs, efk).masked_fill(~pending, 0.0)
        carried = torch.einsum("bhcf,bhfv->bhcv", fqs, state)
        if ld is not None:
            lin = lin * (ld[..., None] * dist.clamp(min=0)).exp()
            carried = carried * (ld * (qp - t_state[:, None])[:, None]).exp()[..., None]
        ln = torch.einsum("bhcn,bhnv->bhcv", lin, with_ones(ev)) + carried
        o = combine(sm[..., :-1], sm[..., -1], ln[..., :-1], ln[..., -1], factor[:, None], eps)  # [B, H, c, V]
        outputs.append(o.transpose(1, 2))
        rows = boundary[:, e - 1]  # rows whose selection point is this piece's last query
        if rows.any():
            state, t_state, entries = select_and_fold(
                state, t_state, entries, qpos[:, e - 1], rows, budget, W, D, F, ld, groups, select, eps
            )
            entries = compact(entries)
    entries = compact(entries)
    cap = budget + C + W  # the window, at most a chunk of pending keys, the cache
    if entries.shape[2] > cap:
        assert not (entries[:, :, cap:, POS] >= 0).any(), "more exact keys than the carry holds"
        entries = entries[:, :, :cap]
    else:
        pad = entries.new_zeros(B, H, cap - entries.shape[2], entries.shape[-1])
        pad[..., POS] = -1
        entries = torch.cat([entries, pad], 2)
    meta = torch.stack([t_state, next_pos + valid.sum(1)], 1)
    o = torch.cat(outputs, 1) if outputs else q.new_zeros(B, 0, H, V)
    return o.to(dtype), (state, meta, entries)


def compact(entries):
    """The occupied entries first (in their order), the empty ones dropped where every head has them."""
    empty = entries[..., POS] < 0
    order = empty.to(torch.int8).argsort(dim=-1, stable=True)
    n = int((~empty).sum(-1).max()) if empty.numel() else 0
    return entries.gather(2, order[..., :n, None].expand(-1, -1, -1, entries.shape[-1]))


def select_and_fold(state, t_state, entries, t, rows, budget, W, D, F, ld, groups, select, eps):
    """At position t [B] of the ``rows`` [B] selecting now: of the cache and the pending keys (those the next query's
    window no longer holds),
    keep the ``budget`` best per key head, fold the rest into the state (decayed to t) and free their slots."""
    B, H = entries.shape[:2]
    pos, cached, received, ek, efk, ev = split_entries(entries, D, F)
    t_ = t.float()[:, None, None]
    candidate = (pos >= 0) & (pos <= t_ + 1 - W) & rows[:, None, None]  # [B, H, N]
    decayed = state
    if ld is not None:
        decayed = state * (ld * (t - t_state).float()[:, None, None]).exp()[..., None]
    by_key_head = lambda x: x.view(B, H // groups, groups, -1).sum(2)  # noqa: E731
    if select == "error":
        score = by_key_head(recall_error(efk, ev, decayed, eps))
    elif select == "attention":
        score = by_key_head(received)
    else:  # the mean share per query that saw the key: an incumbent's count of queries does not outweigh a newcomer
        score = by_key_head(received) / by_key_head(entries[..., SEEN]).clamp_min(1)
    score = score.repeat_interleave(groups, 1)
    score = score.masked_fill(~candidate, float("-inf"))
    kept = torch.zeros_like(candidate)
    n = min(budget, score.shape[-1])
    if n:
        kept.scatter_(-1, score.topk(n, -1).indices, True)
    kept &= candidate
    folded = candidate & ~kept
    weight = folded.float()
    if ld is not None:
        weight = weight * (ld * (t_ - pos).clamp(min=0)).exp()
    grown = decayed + torch.einsum("bhnf,bhnv->bhfv", efk * weight[..., None], with_ones(ev))
    r = rows[:, None, None, None]
    state = torch.where(r, grown, state)
    t_state = torch.where(rows, t, t_state)
    entries = entries.clone()
    entries[..., CACHED] = torch.where(candidate, kept.float(), entries[..., CACHED])
    entries[..., POS] = torch.where(folded, -1.0, pos)
    return state, t_state, entries
