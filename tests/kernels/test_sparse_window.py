"""LoLA's sparse cache beside the window (kernels/window_attn/sparse.py) against independent references."""

import pytest
import torch

from linearize.kernels.window_attn.naive import naive_window_attn
from linearize.kernels.window_attn.sparse import SELECTIONS, cached_keys, sparse_window_attn

B, T, H, D, F, W = 2, 150, 4, 8, 6, 16
G = 2  # query heads per key/value head where a test says groups=G
MAP = torch.randn(H, D, F, generator=torch.Generator().manual_seed(99))


def feature_map(k):
    """A per-head positive feature map of keys [B, n, H, D] (the carry holds k; a continuation recomputes f(k))."""
    return torch.einsum("bnhd,hdf->bnhf", k, MAP).softmax(-1)


def inputs(seed=0):
    """Keys and values repeated to the query heads as repeat_kv does (G per key/value head); f(k) = feature_map(k)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=g)
    k, v = (torch.randn(B, T, H // G, D, generator=g).repeat_interleave(G, 2) for _ in range(2))
    fq, fk = torch.rand(B, T, H, F, generator=g), feature_map(k)
    factor, log_decay = torch.rand(H, generator=g), -0.1 * torch.rand(H, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, :7] = False  # left padding
    sink_k, sink_v = torch.randn(B, 2, H, D, generator=g), torch.randn(B, 2, H, D, generator=g)
    sinks = (sink_k, sink_v, mask[:, :, None].expand(B, T, 2))
    return q, k, fq, fk, v, factor, log_decay, mask, sinks


@pytest.mark.parametrize("select", SELECTIONS)
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_no_budget_is_the_plain_hybrid(chunk, select):
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs()
    kw = dict(log_decay=log_decay, sinks=sinks)
    not_sink = mask.cumsum(1) > sinks[0].shape[1]  # the layer's key mask: the sinks' positions live in their store
    want, _ = naive_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, key_mask=mask & not_sink, **kw)
    got, carry = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, 0, key_mask=mask, chunk_size=chunk, select=select, **kw
    )
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert cached_keys(carry, D)[0].shape == (B, H, 0)


@pytest.mark.parametrize("select", SELECTIONS)
def test_a_cache_holding_everything_is_softmax_over_every_scored_key(select):
    """With room for every key nothing folds: a query reads, through the softmax, its window, the sinks and every key
    scored at an earlier selection (after each position p with (p + 1) % C == 0, of the keys the next query's window
    no longer holds); linearly, only the keys that left its window since. Positions count a row's real tokens, so the
    left-padded row selects at its own positions; the first S positions are the sinks'."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(1)
    C, S = 10, sinks[0].shape[1]
    got, carry = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, T, key_mask=mask, log_decay=log_decay, sinks=sinks, chunk_size=C,
        select=select,
    )  # fmt: skip
    assert carry[0].abs().max() == 0
    pos = mask.cumsum(1) - 1  # [B, T]
    i, j = pos[:, :, None], pos[:, None, :]
    keys = (mask & (pos >= S))[:, None, :]
    scored = j < (i // C) * C - W + 1  # decided at a selection before the query
    soft = ((j <= i) & (j > i - W) | scored) & keys  # [B, T, T]
    lin = (j <= i - W) & ~scored & keys
    s = torch.einsum("bihd,bjhd->bhij", q, k) * D**-0.5
    s = torch.cat([s, torch.einsum("bihd,bshd->bhis", q, sinks[0]) * D**-0.5], -1)
    allowed = torch.cat([soft, sinks[2]], -1)[:, None]
    p = torch.where(allowed, (s - s.masked_fill(~allowed, -1e9).amax(-1, keepdim=True)).exp(), 0.0)
    vv = torch.cat([v, sinks[1]], 1)
    sm_num, sm_den = torch.einsum("bhij,bjhv->bihv", p, vv), p.sum(-1).transpose(1, 2)
    decay = (log_decay[:, None, None] * (i - j).clamp(min=0)[:, None]).exp()
    a = torch.einsum("bihf,bjhf->bhij", fq, fk) * lin[:, None] * decay
    lin_num, lin_den = torch.einsum("bhij,bjhv->bihv", a, v), a.sum(-1).transpose(1, 2)
    want = (factor * sm_num.transpose(-1, -2) + (1 - factor) * lin_num.transpose(-1, -2)).transpose(-1, -2)
    want = want / (factor * sm_den + (1 - factor) * lin_den + 1e-6)[..., None]
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-4)
    # Every key the last selection saw (row 0 at position 149, row 1 at 139: up to position t + 1 - W), no sinks
    kept = cached_keys(carry, D)[0]
    assert kept[0].eq(torch.arange(S, 150 - W + 1)).all()
    assert kept[1, :, -123:].eq(torch.arange(S, 140 - W + 1)).all() and kept[1, :, :-123].eq(-1).all()


def test_the_cache_keeps_the_key_the_state_recalls_worst():
    """Among keys with one value, a key whose value differs is the one the state cannot give back: it is kept, the
    rest fold; every query head of a key head keeps the same keys."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(2)
    v = torch.ones_like(v)
    v[:, 40] = -5.0
    _, carry = sparse_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, 1, log_decay=log_decay, chunk_size=8, groups=G)
    pos, ck, cv = cached_keys(carry, D)
    assert pos.shape == (B, H // 2, 1) and pos.eq(40).all()
    torch.testing.assert_close(cv, v[:, 40:41, ::2].transpose(1, 2))
    torch.testing.assert_close(ck, k[:, 40:41, ::2].transpose(1, 2))


@pytest.mark.parametrize("select", ["attention", "mean"])
def test_attention_selection_keeps_the_key_every_query_looks_at(select):
    """A key that every query's softmax favours is the heavy hitter the attention selections keep."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(3)
    q, k = 0.1 * q, 0.1 * k
    q[..., 0] += 3.0
    k[:, 40, :, 0] = 3.0
    _, carry = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, 1, log_decay=log_decay, chunk_size=8, groups=G, select=select
    )
    assert cached_keys(carry, D)[0].eq(40).all()


def test_the_mean_score_does_not_favour_the_keys_already_cached():
    """A summed score grows with every query that sees a key, and every later query sees a cached one: on random
    inputs 'attention' keeps the earliest keys, 'mean' (the share per query that saw the key) keeps others."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(0)
    kept = {}
    for select in ("attention", "mean"):
        _, carry = sparse_window_attn(
            q,
            k,
            fq,
            fk,
            v,
            factor,
            W,
            D**-0.5,
            4,
            key_mask=mask,
            log_decay=log_decay,
            sinks=sinks,
            chunk_size=8,
            groups=G,
            select=select,
        )
        kept[select] = cached_keys(carry, D)[0]
    assert kept["attention"][0, 0].max() < 10  # among the first positions after the two sinks
    assert kept["mean"].float().mean() > 2 * kept["attention"].float().mean()


def test_an_unknown_selection_is_refused():
    q, k, fq, fk, v, factor, *_ = inputs()
    with pytest.raises(ValueError, match="unknown sparse-cache selection 'oracle'"):
        sparse_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, 4, select="oracle")


def run_in_parts(cuts, q, k, fq, fk, v, factor, log_decay, mask, sinks, **kw):
    """The same inputs fed as consecutive calls, each continuing from the last one's carry."""
    outs, carry = [], None
    for s, e in zip(cuts[:-1], cuts[1:]):
        part = lambda x: x[:, s:e]  # noqa: E731
        o, carry = sparse_window_attn(
            *map(part, (q, k, fq, fk, v)), factor, W, D**-0.5, 12, key_mask=part(mask), log_decay=log_decay,
            sinks=(sinks[0], sinks[1], part(sinks[2])), chunk_size=8, groups=G, carry=carry, feature_map=feature_map,
            **kw,
        )  # fmt: skip
        outs.append(o)
    return torch.cat(outs, 1), carry


@pytest.mark.parametrize("select", SELECTIONS)
def test_a_prefill_continued_and_token_by_token_decoding_equal_one_call(select):
    """Selection depends on positions only: one call, a prefill continued in uneven parts, and a prefill followed by
    one-token steps give the same outputs and the same cache (12 keys per head, selected every 8 positions)."""
    args = inputs(4)
    whole, carry = run_in_parts([0, T], *args, select=select)
    assert cached_keys(carry, D)[0].ge(0).sum(-1).eq(12).all()  # the cache is full: selection chose
    assert carry[2].shape == (B, H // G, 12 + 8 + W, 4 + 2 * D)  # once per key/value head, k and v (no f(k))
    for cuts in ([0, 37, 38, 90, T], [0, 100, *range(101, T + 1)]):
        parts, part_carry = run_in_parts(cuts, *args, select=select)
        torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-4)
        for a, b in zip(cached_keys(part_carry, D), cached_keys(carry, D)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("select", SELECTIONS)
def test_a_left_padded_row_equals_the_row_alone(select):
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(5)
    batch, _ = run_in_parts([0, T], q, k, fq, fk, v, factor, log_decay, mask, sinks, select=select)
    row = lambda x: x[1:, 7:]  # noqa: E731
    alone, _ = run_in_parts(
        [0, T - 7], *map(row, (q, k, fq, fk, v)), factor, log_decay, row(mask),
        (sinks[0][1:], sinks[1][1:], row(sinks[2])), select=select,
    )  # fmt: skip
    torch.testing.assert_close(batch[1, 7:], alone[0], atol=1e-5, rtol=1e-4)


def test_continuing_without_the_feature_map_is_refused():
    q, k, fq, fk, v, factor, *_ = inputs()
    _, carry = sparse_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, 4, groups=G)
    with pytest.raises(ValueError, match="needs the feature_map that made fk"):
        sparse_window_attn(
            q[:, :1], k[:, :1], fq[:, :1], fk[:, :1], v[:, :1], factor, W, D**-0.5, 4, groups=G, carry=carry
        )
