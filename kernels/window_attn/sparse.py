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
``entries`` [B, H / groups, budget + chunk_size + window, 4 + D + V] (position (-1: empty), in-cache flag, received
attention, queries that saw it, k, v) that hold the window, the pending keys and the cache. They are kept once per
key/value head (a group's query heads share its keys, values and choices; the scores are the group's sums) and without
f(k), which the next call recomputes from k: a sixth of what the query heads' k, f(k) and v would take at 9 query and
3 key heads with F = 2 D.

Form: chunk-recurrent (a loop over pieces of at most chunk_size queries, cut at every row's selection), the reference.
"""

import torch

from linearize.kernels.linear_attn.dispatch import with_ones
from linearize.kernels.window_attn.naive import combine

POS, CACHED, RECEIVED, SEEN, FIRST = 0, 1, 2, 3, 4  # the columns of ``entries`` before k, v


# How the cache chooses: LoLA's self-recall error, the attention a key received (summed, as H2O), or its mean per query
# that saw it.
SELECTIONS = ("error", "attention", "mean")


def recall_error(fk, v, state, eps=1e-6):
    """|| v - f(k) S / f(k) z ||^2 for keys fk [B, H, n, F], values v [B, H, n, V] against state [B, H, F, V + 1]."""
    read = torch.einsum("bhnf,bhfv->bhnv", fk, state)
    return (v - read[..., :-1] / (read[..., -1:] + eps)).pow(2).sum(-1)


def take(x, index):
    """The entries ``index`` [B, H, n] of x [B, H, N] or [B, H, N, *], per row and head."""
    return x.gather(2, index if x.dim() == 3 else index[..., None].expand(-1, -1, -1, x.shape[-1]))


def cached_keys(carry, D):
    """The cache's (positions [B, Hk, n], k, v) in a carry, at the key/value heads, in position order per head (n: the
    most any head holds; -1 pads)."""
    entries = carry[2]
    pos = torch.where(entries[..., CACHED] > 0, entries[..., POS], -1.0)
    order = pos.argsort(dim=-1, descending=True, stable=True).flip(-1)  # kept ones last, ascending
    n = int((pos >= 0).sum(-1).max())
    order = order[..., order.shape[-1] - n :]
    return take(pos, order).long(), take(entries[..., FIRST : FIRST + D], order), take(entries[..., FIRST + D :], order)


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
    feature_map=None,
):
    """``naive_window_attn``'s contract with a sparse cache of ``budget`` keys per key/value head, from the start of the
    sequences or continuing from ``carry`` (what an earlier call returned). q, k [B, T, H, D], fq, fk [B, T, H, F], v
    [B, T, H, V] at the query heads; ``groups`` query heads share a key head (repeat_kv's order) and its cache, chosen
    by their scores' sum; k and v must be the same within a group (repeat_kv's copies). ``feature_map``: f for keys
    [B, n, H, D] at the query heads, as fk was made (needed to continue from a carry, which holds k, not f(k)).
    ``key_mask`` [B, T]: the real tokens (left padding only); a row's positions count them from
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
        entries = q.new_zeros(B, H // groups, 0, FIRST + D + V)
    else:
        if feature_map is None:
            raise ValueError("continuing a sparse cache needs the feature_map that made fk (its carry holds k)")
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
    # The loop works on the entries' columns apart, each contiguous (a packed view's strides cost the products
    # copies); the carry packs them again at the end.
    pos, cached, received, seen, ek, efk, ev = unpack(entries, D, F, groups, feature_map, dtype)
    new_pos = torch.where(keyed, qpos, -1).float()[:, None, :].expand(B, H, T)
    qT, fqT, kT, fkT, vT = (x.transpose(1, 2).contiguous() for x in (q, fq, k, fk, with_ones(v)))  # [B, H, T, *]
    if sinks is not None:
        sink_kT, sink_vT = sink_k.transpose(1, 2), with_ones(sink_v).transpose(1, 2)
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
        zeros = q.new_zeros(B, H, e - s)
        pos, ek, efk, ev = (
            torch.cat([x, y[:, :, s:e]], 2) for x, y in ((pos, new_pos), (ek, kT), (efk, fkT), (ev, vT))
        )
        cached = torch.cat([cached, zeros.bool()], 2)
        received, seen = torch.cat([received, zeros], 2), torch.cat([seen, zeros], 2)
        qp = qpos[:, s:e]  # [B, c]
        qs, fqs = qT[:, :, s:e], fqT[:, :, s:e]  # [B, H, c, *]
        present = (pos >= 0)[:, :, None]  # [B, H, 1, N]
        dist = qp[:, None, :, None] - pos[:, :, None, :]  # [B, H, c, N]
        asks = valid[:, None, s:e, None]  # padding asks nothing
        soft = present & asks & (((dist >= 0) & (dist < W)) | cached[:, :, None])  # the window and the cache
        pending = present & ~cached[:, :, None] & (dist >= W)
        scores = (qs @ ek.transpose(-1, -2) * scale).masked_fill(~soft, float("-inf"))
        m = scores.amax(-1, keepdim=True)
        if sinks is not None:
            sink_scores = (qs @ sink_kT.transpose(-1, -2) * scale).masked_fill(
                ~sink_visible[:, None, s:e], float("-inf")
            )
            m = torch.maximum(m, sink_scores.amax(-1, keepdim=True))
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = (scores - m).exp()
        sm = p @ ev
        if sinks is not None:
            sm = sm + (sink_scores - m).exp() @ sink_vT
        if select != "error":
            received = received + (p / sm[..., -1:].clamp_min(1e-30)).sum(2)
            seen = seen + soft.sum(2)
        # Cached keys are never read linearly, and they lead the entries (older than the window's): the linear
        # part reads from the first entry that some row and head does not cache.
        n0 = int(cached.all(1).all(0).int().cumprod(-1).sum())
        lin = (fqs @ efk[:, :, n0:].transpose(-1, -2)).masked_fill(~pending[..., n0:], 0.0)
        carried = fqs @ state
        if ld is not None:
            lin = lin * (ld[..., None] * dist[..., n0:].clamp(min=0)).exp()
            carried = carried * (ld * (qp - t_state[:, None])[:, None]).exp()[..., None]
        ln = lin @ ev[:, :, n0:] + carried
        o = combine(sm[..., :-1], sm[..., -1], ln[..., :-1], ln[..., -1], factor[:, None], eps)  # [B, H, c, V]
        outputs.append(o.transpose(1, 2))
        rows = boundary[:, e - 1]  # rows whose selection point is this piece's last query
        if rows.any():
            state, t_state, pos, cached = select_and_fold(
                state, t_state, (pos, cached, received, seen, efk, ev), qpos[:, e - 1], rows, budget, W, ld, groups,
                select, eps,
            )  # fmt: skip
            pos, cached, received, seen, ek, efk, ev = compact(pos, cached, received, seen, ek, efk, ev)
    entries = pack(*compact(pos, cached, received, seen, ek, ev), groups)
    cap = budget + C + W  # the window, at most a chunk of pending keys, the cache
    if entries.shape[2] > cap:
        assert not (entries[:, :, cap:, POS] >= 0).any(), "more exact keys than the carry holds"
        entries = entries[:, :, :cap]
    else:
        pad = entries.new_zeros(B, H // groups, cap - entries.shape[2], entries.shape[-1])
        pad[..., POS] = -1
        entries = torch.cat([entries, pad], 2)
    meta = torch.stack([t_state, next_pos + valid.sum(1)], 1)
    o = torch.cat(outputs, 1) if outputs else q.new_zeros(B, 0, H, V)
    return o.to(dtype), (state, meta, entries)


def unpack(entries, D, F, groups, feature_map, dtype):
    """A carry's ``entries`` at the query heads, columns apart: position, in-cache flag (bool), received attention,
    queries that saw it [B, H, N] (a group's sums shared evenly: selection sums them again); k, f(k), [v, 1]
    [B, H, N, *]."""
    entries = entries.repeat_interleave(groups, 1)
    pos, cached, k, v = (
        entries[..., POS],
        entries[..., CACHED] > 0,
        entries[..., FIRST : FIRST + D],
        entries[..., FIRST + D :],
    )
    received, seen = entries[..., RECEIVED] / groups, entries[..., SEEN] / groups
    if k.shape[2]:
        fk = feature_map(k.transpose(1, 2).to(dtype)).float().transpose(1, 2)
    else:
        fk = k.new_zeros(*k.shape[:-1], F)
    return pos, cached, received, seen, k.contiguous(), fk.contiguous(), with_ones(v)


def pack(pos, cached, received, seen, k, v1, groups):
    """The carry's ``entries`` [B, H / groups, N, 4 + D + V] from the query heads' columns (one head per group; the
    group's sums of the scores)."""
    B, H, N = pos.shape
    one = lambda x: x[:, ::groups]  # noqa: E731
    group_sum = lambda x: x.view(B, H // groups, groups, N).sum(2)  # noqa: E731
    cols = (x[..., None] for x in (one(pos), one(cached).float(), group_sum(received), group_sum(seen)))
    return torch.cat([*cols, one(k), one(v1)[..., :-1]], -1)


def compact(pos, *columns):
    """The occupied entries first (in their order), the empty ones dropped where every head has them; ``columns``
    [B, H, N] or [B, H, N, *] go along."""
    empty = pos < 0
    order = empty.to(torch.int8).argsort(dim=-1, stable=True)
    n = int((~empty).sum(-1).max()) if empty.numel() else 0
    order = order[..., :n]
    return (take(pos, order), *(take(x, order) for x in columns))


def select_and_fold(state, t_state, entries, t, rows, budget, W, ld, groups, select, eps):
    """At position t [B] of the ``rows`` [B] selecting now: of the cache and the pending keys (those the next query's
    window no longer holds), keep the ``budget`` best per key head, fold the rest into the state (decayed to t) and
    free their slots. ``entries``: (pos, cached, received, seen, f(k), [v, 1]) as ``unpack`` gives them; returns
    (state, t_state, pos, cached)."""
    pos, cached, received, seen, efk, ev = entries
    B, H = pos.shape[:2]
    t_ = t.float()[:, None, None]
    candidate = (pos >= 0) & (pos <= t_ + 1 - W) & rows[:, None, None]  # [B, H, N]
    decayed = state
    if ld is not None:
        decayed = state * (ld * (t - t_state).float()[:, None, None]).exp()[..., None]
    by_key_head = lambda x: x.view(B, H // groups, groups, -1).sum(2)  # noqa: E731
    if select == "error":
        score = by_key_head(recall_error(efk, ev[..., :-1], decayed, eps))
    elif select == "attention":
        score = by_key_head(received)
    else:  # the mean share per query that saw the key: an incumbent's count of queries does not outweigh a newcomer
        score = by_key_head(received) / by_key_head(seen).clamp_min(1)
    score = score.repeat_interleave(groups, 1)
    score = score.masked_fill(~candidate, float("-inf"))
    # The candidates best first: the first ``budget`` stay, the rest fold (only those are read for the state).
    order = score.topk(int(candidate.sum(-1).max()), -1).indices
    n = min(budget, order.shape[-1])
    kept = torch.zeros_like(candidate).scatter_(-1, order[..., :n], True) & candidate
    folded = candidate & ~kept
    out = order[..., n:]
    weight = folded.gather(-1, out).float()
    if ld is not None:
        weight = weight * (ld * (t_ - pos.gather(-1, out)).clamp(min=0)).exp()
    grown = decayed + (take(efk, out) * weight[..., None]).transpose(-1, -2) @ take(ev, out)
    state = torch.where(rows[:, None, None, None], grown, state)
    t_state = torch.where(rows, t, t_state)
    return state, t_state, torch.where(folded, -1.0, pos), torch.where(candidate, kept, cached)
