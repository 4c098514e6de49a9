"""LoLA's sparse cache beside the window (kernels/window_attn/sparse.py) against independent references."""

import pytest
import torch

from linearize.kernels.window_attn.naive import naive_window_attn
from linearize.kernels.window_attn.sparse import sparse_window_attn

B, T, H, D, F, W = 2, 150, 4, 8, 6, 16


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
    fq, fk = (torch.rand(B, T, H, F, generator=g) for _ in range(2))
    factor, log_decay = torch.rand(H, generator=g), -0.1 * torch.rand(H, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, :7] = False  # left padding
    sink_k, sink_v = torch.randn(B, 2, H, D, generator=g), torch.randn(B, 2, H, D, generator=g)
    sinks = (sink_k, sink_v, mask[:, :, None].expand(B, T, 2))
    return q, k, fq, fk, v, factor, log_decay, mask, sinks


@pytest.mark.parametrize("select", ["error", "attention"])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_no_budget_is_the_plain_hybrid(chunk, select):
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs()
    kw = dict(key_mask=mask, log_decay=log_decay, sinks=sinks)
    want, _ = naive_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, **kw)
    got, (state, (pos, *_)) = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, 0, chunk_size=chunk, select=select, **kw
    )
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert pos.shape == (B, H, 0)


@pytest.mark.parametrize("select", ["error", "attention"])
def test_a_cache_holding_everything_is_softmax_over_every_scored_key(select):
    """With room for every key nothing folds: a query reads, through the softmax, its window, the sinks and every key
    scored at an earlier chunk's end; linearly, only the keys that left its window within its own chunk."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(1)
    C = 10
    got, (state, (pos, *_)) = sparse_window_attn(
        q,
        k,
        fq,
        fk,
        v,
        factor,
        W,
        D**-0.5,
        T,
        key_mask=mask,
        log_decay=log_decay,
        sinks=sinks,
        chunk_size=C,
        select=select,
    )
    assert state.abs().max() == 0
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    scored = j < (i // C) * C - W + 1  # decided before the query's chunk
    soft = ((j <= i) & (j > i - W) | scored) & mask[:, None, :]  # [B, T, T]
    lin = (j <= i - W) & ~scored & mask[:, None, :]
    s = torch.einsum("bihd,bjhd->bhij", q, k) * D**-0.5
    s = torch.cat([s, torch.einsum("bihd,bshd->bhis", q, sinks[0]) * D**-0.5], -1)
    allowed = torch.cat([soft, sinks[2]], -1)[:, None]
    p = torch.where(allowed, (s - s.masked_fill(~allowed, -1e9).amax(-1, keepdim=True)).exp(), 0.0)
    vv = torch.cat([v, sinks[1]], 1)
    sm_num, sm_den = torch.einsum("bhij,bjhv->bihv", p, vv), p.sum(-1).transpose(1, 2)
    a = torch.einsum("bihf,bjhf->bhij", fq, fk) * lin[:, None] * (log_decay[:, None, None] * (i - j).clamp(min=0)).exp()
    lin_num, lin_den = torch.einsum("bhij,bjhv->bihv", a, v), a.sum(-1).transpose(1, 2)
    want = (factor * sm_num.transpose(-1, -2) + (1 - factor) * lin_num.transpose(-1, -2)).transpose(-1, -2)
    want = want / (factor * sm_den + (1 - factor) * lin_den + 1e-6)[..., None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert pos.ge(0).sum(-1).tolist() == [[T - W + 1] * H, [T - W + 1 - 7] * H]  # every key that left, no padding
    assert not pos[1].eq(torch.arange(7)[:, None, None]).any()


def test_the_cache_keeps_the_key_the_state_recalls_worst():
    """Among keys with one value, a key whose value differs is the one the state cannot give back: it is kept, the
    rest fold; every query head of a key head keeps the same keys."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(2)
    v = torch.ones_like(v)
    v[:, 40] = -5.0
    _, (state, (pos, ck, cfk, cv)) = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, 1, log_decay=log_decay, chunk_size=8, groups=2
    )
    assert pos.eq(40).all()
    torch.testing.assert_close(cv, v[:, 40:41].transpose(1, 2).expand(B, H, 1, D))


def test_attention_selection_keeps_the_key_every_query_looks_at():
    """A key that every query's softmax favours is the heavy hitter the attention selection keeps."""
    q, k, fq, fk, v, factor, log_decay, mask, sinks = inputs(3)
    q, k = 0.1 * q, 0.1 * k
    q[..., 0] += 3.0
    k[:, 40, :, 0] = 3.0
    _, (state, (pos, *_)) = sparse_window_attn(
        q, k, fq, fk, v, factor, W, D**-0.5, 1, log_decay=log_decay, chunk_size=8, groups=2, select="attention"
    )
    assert pos.eq(40).all()


def test_an_unknown_selection_is_refused():
    q, k, fq, fk, v, factor, *_ = inputs()
    with pytest.raises(ValueError, match="unknown sparse-cache selection 'oracle'"):
        sparse_window_attn(q, k, fq, fk, v, factor, W, D**-0.5, 4, select="oracle")
