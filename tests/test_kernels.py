"""The three forms of each recurrence agree (fp32, 1e-4), including state carried across chunks and calls."""

import pytest
import torch

from linearize.kernels.linear_attn.dispatch import TORCH_FORMS, linear_attn, normalized_linear_attn
from linearize.kernels.window_attn.chunk import chunk_window_attn
from linearize.kernels.window_attn.naive import naive_window_attn
from linearize.kernels.window_attn.recurrent import recurrent_window_attn

TOL = 1e-4


def inputs(B=2, T=45, H=3, K=8, V=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    gate = -torch.rand(B, T, H, generator=g) * 0.5
    return q, k, v, gate


@pytest.mark.parametrize("gated", ["none", "fixed", "data", "per-key"])
def test_linear_attn_forms_agree(gated):
    q, k, v, gate = inputs()
    key_gate = -torch.rand(*k.shape, generator=torch.Generator().manual_seed(5)) * 0.5
    g = {"none": None, "fixed": torch.full_like(gate, -0.1), "data": gate, "per-key": key_gate}[gated]
    ref, ref_state = TORCH_FORMS["naive"](q, k, v, g, 0.7, None, True)
    for form, kwargs in (("chunk", {"chunk_size": 16}), ("chunk", {"chunk_size": 64}), ("recurrent", {})):
        o, s = TORCH_FORMS[form](q, k, v, g, 0.7, None, True, **kwargs)
        assert (o - ref).abs().max() < TOL, form
        assert (s - ref_state).abs().max() < TOL, form


@pytest.mark.parametrize("split", [1, 16, 30])
@pytest.mark.parametrize("per_key", [False, True])
def test_linear_attn_state_carries_across_calls(split, per_key):
    """Prefill with one form, continue with another: same as one pass over everything."""
    q, k, v, g = inputs()
    if per_key:
        g = g[..., None] * torch.linspace(0.2, 1.5, k.shape[-1])
    ref, ref_state = TORCH_FORMS["naive"](q, k, v, g, 1.0, None, True)
    _, s = TORCH_FORMS["chunk"](q[:, :split], k[:, :split], v[:, :split], g[:, :split], 1.0, None, True, chunk_size=8)
    o2, s2 = TORCH_FORMS["recurrent"](q[:, split:], k[:, split:], v[:, split:], g[:, split:], 1.0, s, True)
    assert (o2 - ref[:, split:]).abs().max() < TOL
    assert (s2 - ref_state).abs().max() < TOL


def test_normalized_linear_attn_matches_definition():
    q, k, v, _ = inputs()
    q, k = q.relu() + 0.1, k.relu() + 0.1
    o, _ = normalized_linear_attn(q, k, v, mode="chunk", eps=0.0)
    w = torch.einsum("bthk,bshk->bhts", q, k).tril()
    expected = torch.einsum("bhts,bshv->bthv", w / w.sum(-1, keepdim=True), v)
    assert (o - expected).abs().max() < TOL


def test_unknown_mode_is_an_error():
    q, k, v, _ = inputs()
    with pytest.raises(ValueError, match="unknown linear-attention mode"):
        linear_attn(q, k, v, mode="bogus")


def window_inputs(seed=0, T=45, H=3):
    q, k, v, _ = inputs(T=T, H=H, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    fq, fk = torch.rand(2, T, H, 6, generator=g), torch.rand(2, T, H, 6, generator=g)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, :7] = False  # left padding in the second row
    return q, k, fq, fk, v, torch.rand(H, generator=g), mask


WINDOW_FORMS = {"naive": naive_window_attn, "chunk": chunk_window_attn, "recurrent": recurrent_window_attn}


LOG_DECAY = torch.log(torch.tensor([0.97, 0.8, 0.999]))  # one per head of window_inputs


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("window", [1, 4, 17, 64])
def test_window_attn_forms_agree(window, decay):
    q, k, fq, fk, v, a, mask = window_inputs()
    ld = LOG_DECAY if decay else None
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=ld)
    for name, fn in WINDOW_FORMS.items():
        kwargs = {"chunk_size": 8} if name == "chunk" else {}
        o, s = fn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=ld, **kwargs)
        assert (o - ref).abs().max() < TOL, name
        assert (s - ref_state).abs().max() < TOL, name


def test_window_attn_decay_gradients_agree():
    """Chunked and recurrent forms give the naive form's gradients, the decay's included."""
    grads = {}
    for name, fn in WINDOW_FORMS.items():
        q, k, fq, fk, v, a, mask = (x.clone().requires_grad_(x.is_floating_point()) for x in window_inputs(T=30))
        ld = LOG_DECAY.clone().requires_grad_(True)
        kwargs = {"chunk_size": 8} if name == "chunk" else {}
        o, s = fn(q, k, fq, fk, v, a, 6, 0.35, key_mask=mask, log_decay=ld, **kwargs)
        (o.square().sum() + s.sum()).backward()
        grads[name] = [x.grad for x in (q, k, fq, fk, v, a, ld)]
    for name in ("chunk", "recurrent"):
        for ref, got in zip(grads["naive"], grads[name]):
            assert (ref - got).abs().max() < 1e-3 * (1 + ref.abs().max()), name


def test_window_attn_decay_forgets_old_tokens():
    """With a strong decay, changing a token far outside the window leaves late outputs unchanged; without
    decay the same change moves them."""
    q, k, fq, fk, v, a, _ = window_inputs(T=200)
    v2 = v.clone()
    v2[:, 0] += 5.0
    strong = torch.full((3,), -0.5)
    for ld, moved in ((strong, False), (None, True)):
        o1, _ = chunk_window_attn(q, k, fq, fk, v, a, 4, 0.35, log_decay=ld)
        o2, _ = chunk_window_attn(q, k, fq, fk, v2, a, 4, 0.35, log_decay=ld)
        assert ((o1[:, -1] - o2[:, -1]).abs().max() > 1e-3) == moved


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("window,split", [(4, 20), (17, 9), (17, 30), (64, 20)])
def test_window_attn_prefill_then_decode(window, split, decay):
    """Prefill with the chunked form, then continue token by token with the previous window and state."""
    q, k, fq, fk, v, a, mask = window_inputs()
    ld = LOG_DECAY if decay else None
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=ld)
    _, state = chunk_window_attn(q[:, :split], k[:, :split], fq[:, :split], fk[:, :split], v[:, :split], a, window,
                                 0.35, key_mask=mask[:, :split], chunk_size=8, log_decay=ld)
    outs = []
    for t in range(split, q.shape[1]):
        P = min(t, window - 1)
        past = (k[:, t - P : t], fk[:, t - P : t], v[:, t - P : t]) if P else None
        o, state = recurrent_window_attn(q[:, t : t + 1], k[:, t : t + 1], fq[:, t : t + 1], fk[:, t : t + 1],
                                         v[:, t : t + 1], a, window, 0.35, key_mask=mask[:, t - P : t + 1],
                                         past=past, initial_state=state, log_decay=ld)
        outs.append(o)
    assert (torch.cat(outs, 1) - ref[:, split:]).abs().max() < TOL
    assert (state - ref_state).abs().max() < TOL


@pytest.mark.parametrize("split", [10, 33])
def test_window_attn_decay_chunk_after_chunk(split):
    """Two chunked prefills (the second with the first's window and state) equal one pass."""
    q, k, fq, fk, v, a, mask = window_inputs()
    W = 8
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, W, 0.35, key_mask=mask, log_decay=LOG_DECAY)
    o1, state = chunk_window_attn(q[:, :split], k[:, :split], fq[:, :split], fk[:, :split], v[:, :split], a, W, 0.35,
                                  key_mask=mask[:, :split], chunk_size=8, log_decay=LOG_DECAY)
    P = min(split, W - 1)
    past = (k[:, split - P : split], fk[:, split - P : split], v[:, split - P : split])
    o2, state = chunk_window_attn(q[:, split:], k[:, split:], fq[:, split:], fk[:, split:], v[:, split:], a, W, 0.35,
                                  key_mask=mask[:, split - P :], past=past, initial_state=state, chunk_size=8,
                                  log_decay=LOG_DECAY)
    assert (torch.cat([o1, o2], 1) - ref).abs().max() < TOL
    assert (state - ref_state).abs().max() < TOL


def test_window_of_whole_sequence_is_softmax_attention():
    """With the window covering everything, the hybrid is exactly causal softmax attention."""
    q, k, fq, fk, v, a, _ = window_inputs()
    o, _ = chunk_window_attn(q, k, fq, fk, v, a, 1000, 0.35)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=0.35).transpose(1, 2)
    assert (o - expected).abs().max() < TOL


from linearize.kernels.delta_rule.dispatch import TORCH_FORMS as DELTA_FORMS  # noqa: E402


def delta_inputs(T=45):
    q, k, v, g = inputs(T=T)
    k = torch.nn.functional.normalize(k, dim=-1)
    beta = torch.rand(*g.shape, generator=torch.Generator().manual_seed(7))
    return q, k, v, beta, g


@pytest.mark.parametrize("gated", [False, True])
def test_gated_delta_forms_agree(gated):
    q, k, v, beta, g = delta_inputs()
    g = g if gated else None
    s0 = torch.randn(2, 3, 8, 5, generator=torch.Generator().manual_seed(8)) * 0.1
    ref, ref_s = DELTA_FORMS["recurrent"](q, k, v, beta, g, 0.5, s0, True)
    for name, kwargs in (("naive", {}), ("chunk", {"chunk_size": 16}), ("chunk", {"chunk_size": 64})):
        o, s = DELTA_FORMS[name](q, k, v, beta, g, 0.5, s0, True, **kwargs)
        assert (o - ref).abs().max() < TOL, name
        assert (s - ref_s).abs().max() < TOL, name


def test_delta_rule_with_beta_one_stores_the_last_value():
    """beta = 1 and no decay: reading with the same unit key returns exactly the value just written."""
    q, k, v, beta, _ = delta_inputs(T=5)
    o, _ = DELTA_FORMS["chunk"](k, k, v, torch.ones_like(beta), None, 1.0)
    assert (o - v).abs().max() < TOL


def sink_inputs(T=45, H=3, S=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    k_s, v_s = torch.randn(2, S, H, 8, generator=g), torch.randn(2, S, H, 5, generator=g)
    visible = torch.arange(S)[None, None, :] <= torch.arange(T)[None, :, None]  # slot s is seen from position s on
    visible = visible.expand(2, T, S).clone()
    visible[1, :, 2] = False  # a slot the second row never filled
    return k_s, v_s, visible


@pytest.mark.parametrize("window", [1, 4, 17])
def test_window_attn_forms_agree_with_sinks(window):
    q, k, fq, fk, v, a, mask = window_inputs()
    sinks = sink_inputs()
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=LOG_DECAY, sinks=sinks)
    plain, _ = naive_window_attn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=LOG_DECAY)
    assert (ref - plain).abs().max() > 1e-2  # the sinks take part
    for name, fn in WINDOW_FORMS.items():
        kwargs = {"chunk_size": 8} if name == "chunk" else {}
        o, s = fn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=LOG_DECAY, sinks=sinks, **kwargs)
        assert (o - ref).abs().max() < TOL, name
        assert (s - ref_state).abs().max() < TOL, name


def test_sinks_are_softmax_keys_beside_the_window():
    """A window of 1 (each query sees itself) plus sinks, with the linear part switched off (factor 1), is
    softmax attention over the query's own key and the visible sinks."""
    q, k, fq, fk, v, _, _ = window_inputs()
    k_s, v_s, visible = sink_inputs()
    o, _ = chunk_window_attn(q, k, fq, fk, v, torch.ones(3), 1, 0.35, sinks=(k_s, v_s, visible))
    keys, values = torch.cat([k[:, :, None], k_s[:, None].expand(-1, 45, -1, -1, -1)], 2), \
        torch.cat([v[:, :, None], v_s[:, None].expand(-1, 45, -1, -1, -1)], 2)  # [B, T, 1 + S, H, *]
    scores = torch.einsum("bthd,btshd->bths", q, keys) * 0.35
    allowed = torch.cat([torch.ones(2, 45, 1, dtype=torch.bool), visible], -1)[:, :, None]
    expected = torch.einsum("bths,btshv->bthv", scores.masked_fill(~allowed, -1e9).softmax(-1), values)
    assert (o - expected).abs().max() < TOL


def test_sink_gradients_agree():
    grads = {}
    for name, fn in WINDOW_FORMS.items():
        q, k, fq, fk, v, a, mask = (x.clone().requires_grad_(x.is_floating_point()) for x in window_inputs(T=20))
        k_s, v_s, visible = sink_inputs(T=20)
        k_s.requires_grad_(True), v_s.requires_grad_(True)
        kwargs = {"chunk_size": 8} if name == "chunk" else {}
        o, _ = fn(q, k, fq, fk, v, a, 5, 0.35, key_mask=mask, log_decay=LOG_DECAY, sinks=(k_s, v_s, visible), **kwargs)
        o.square().sum().backward()
        grads[name] = [x.grad for x in (q, k, v, k_s, v_s)]
    for name in ("chunk", "recurrent"):
        for ref, got in zip(grads["naive"], grads[name]):
            assert (ref - got).abs().max() < 1e-3 * (1 + ref.abs().max()), name
