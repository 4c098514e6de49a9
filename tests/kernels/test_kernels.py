"""The three forms of each recurrence agree (fp32, 1e-4), including state carried across chunks and calls, and
in gradients: every form and each dispatch's 'auto' give the naive form's gradient of every input (end of file)."""

import pytest
import torch

from linearize.kernels.linear_attn.dispatch import TORCH_FORMS, linear_attn, normalized_linear_attn
from linearize.kernels.window_attn.chunk import chunk_window_attn
from linearize.kernels.window_attn.naive import naive_window_attn, with_ones
from linearize.kernels.window_attn.recurrent import recurrent_window_attn, step_window_attn

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


def step_as_form(q, k, fq, fk, v, factor, window, scale, past=None, **kwargs):
    """The decode step under the forms' contract: the window is the past plus the one new token."""
    if past is not None:
        k, fk, v = (torch.cat([p, x], 1) for p, x in zip(past, (k, fk, v)))
    evicted = fk[:, 0] if k.shape[1] == window else None
    sinks = kwargs.pop("sinks", None)
    if sinks is not None:  # head-major, values with the ones column, as the sink store holds them
        sinks = (sinks[0].transpose(1, 2), with_ones(sinks[1]).transpose(1, 2), sinks[2])
    return step_window_attn(
        q,
        fq,
        k.transpose(1, 2),
        with_ones(v).transpose(1, 2),
        factor,
        window,
        scale,
        evicted=evicted,
        sinks=sinks,
        **kwargs,
    )  # the window head-major, as the cache holds it


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


@pytest.mark.parametrize("step", [recurrent_window_attn, step_as_form], ids=["recurrent", "step"])
@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("window,split", [(4, 20), (17, 9), (17, 30), (64, 20)])
def test_window_attn_prefill_then_decode(window, split, decay, step):
    """Prefill with the chunked form, then continue token by token with the previous window and state."""
    q, k, fq, fk, v, a, mask = window_inputs()
    ld = LOG_DECAY if decay else None
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=ld)
    _, state = chunk_window_attn(
        q[:, :split],
        k[:, :split],
        fq[:, :split],
        fk[:, :split],
        v[:, :split],
        a,
        window,
        0.35,
        key_mask=mask[:, :split],
        chunk_size=8,
        log_decay=ld,
    )
    outs = []
    for t in range(split, q.shape[1]):
        P = min(t, window - 1)
        past = (k[:, t - P : t], fk[:, t - P : t], v[:, t - P : t]) if P else None
        o, state = step(
            q[:, t : t + 1],
            k[:, t : t + 1],
            fq[:, t : t + 1],
            fk[:, t : t + 1],
            v[:, t : t + 1],
            a,
            window,
            0.35,
            key_mask=mask[:, t - P : t + 1],
            past=past,
            initial_state=state,
            log_decay=ld,
        )
        outs.append(o)
    assert (torch.cat(outs, 1) - ref[:, split:]).abs().max() < TOL
    assert (state - ref_state).abs().max() < TOL


@pytest.mark.parametrize("split", [10, 33])
def test_window_attn_decay_chunk_after_chunk(split):
    """Two chunked prefills (the second with the first's window and state) equal one pass."""
    q, k, fq, fk, v, a, mask = window_inputs()
    W = 8
    ref, ref_state = naive_window_attn(q, k, fq, fk, v, a, W, 0.35, key_mask=mask, log_decay=LOG_DECAY)
    o1, state = chunk_window_attn(
        q[:, :split],
        k[:, :split],
        fq[:, :split],
        fk[:, :split],
        v[:, :split],
        a,
        W,
        0.35,
        key_mask=mask[:, :split],
        chunk_size=8,
        log_decay=LOG_DECAY,
    )
    P = min(split, W - 1)
    past = (k[:, split - P : split], fk[:, split - P : split], v[:, split - P : split])
    o2, state = chunk_window_attn(
        q[:, split:],
        k[:, split:],
        fq[:, split:],
        fk[:, split:],
        v[:, split:],
        a,
        W,
        0.35,
        key_mask=mask[:, split - P :],
        past=past,
        initial_state=state,
        chunk_size=8,
        log_decay=LOG_DECAY,
    )
    assert (torch.cat([o1, o2], 1) - ref).abs().max() < TOL
    assert (state - ref_state).abs().max() < TOL


def test_window_of_whole_sequence_is_softmax_attention():
    """With the window covering everything, the hybrid is exactly causal softmax attention."""
    q, k, fq, fk, v, a, _ = window_inputs()
    o, _ = chunk_window_attn(q, k, fq, fk, v, a, 1000, 0.35)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=0.35
    ).transpose(1, 2)
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
    ref, ref_state = naive_window_attn(
        q, k, fq, fk, v, a, window, 0.35, key_mask=mask, log_decay=LOG_DECAY, sinks=sinks
    )
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
    keys, values = (
        torch.cat([k[:, :, None], k_s[:, None].expand(-1, 45, -1, -1, -1)], 2),
        torch.cat([v[:, :, None], v_s[:, None].expand(-1, 45, -1, -1, -1)], 2),
    )  # [B, T, 1 + S, H, *]
    scores = torch.einsum("bthd,btshd->bths", q, keys) * 0.35
    allowed = torch.cat([torch.ones(2, 45, 1, dtype=torch.bool), visible], -1)[:, :, None]
    expected = torch.einsum("bths,btshv->bthv", scores.masked_fill(~allowed, -1e9).softmax(-1), values)
    assert (o - expected).abs().max() < TOL


# --- Gradients: every form against the naive one, in outputs, final state and every input's gradient ---------
#
# The kernels compute in float32 whatever the inputs' dtype (they call .float()), so these checks run in
# float32: an error of at most GRAD_TOL times the reference's largest entry, plus 1e-5 (observed: under 1e-5
# relative, under 2e-6 where a gradient is about 0). Scaling any one gradient by 1 + 1e-3 fails them.

from functools import partial  # noqa: E402

from linearize.kernels.delta_rule.dispatch import gated_delta  # noqa: E402
from linearize.kernels.delta_rule.recurrent import gated_delta_step  # noqa: E402
from linearize.kernels.linear_attn.chunk import chunk_linear_attn  # noqa: E402
from linearize.kernels.ssd.chunk import chunk_ssd  # noqa: E402
from linearize.kernels.ssd.dispatch import TORCH_FORMS as TORCH_FORMS_SSD  # noqa: E402
from linearize.kernels.ssd.dispatch import ssd  # noqa: E402
from linearize.kernels.ssd.recurrent import ssd_step  # noqa: E402
from linearize.kernels.window_attn.dispatch import SOFTMAX_FORMS, window_attn, window_softmax  # noqa: E402

GRAD_TOL = 1e-4
CHUNK = 8  # the chunked forms' chunk size below
LENGTHS = [1, 7, 16, 21]  # one token, part of a chunk, whole chunks, chunks and a remainder


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def run_with_grads(call, inputs, seed=123):
    """call(**inputs) -> (output, final state); backprop a fixed random cotangent through both and return the
    output, the state and the gradient of every floating input (zeros where none reached it)."""
    leaves = {n: x.detach().clone().requires_grad_(x.is_floating_point()) for n, x in inputs.items()}
    out, state = call(**leaves)
    assert out.dtype == torch.float32 and state is not None
    do, ds = randn(*out.shape, seed=seed), randn(*state.shape, seed=seed + 1)
    ((out * do).sum() + (state * ds).sum()).backward()
    results = {"output": out.detach(), "final state": state.detach()}
    for n, x in leaves.items():
        if x.is_floating_point():
            results[f"d{n}"] = torch.zeros_like(x) if x.grad is None else x.grad
    return results


def assert_forms_agree(calls, inputs, tol=GRAD_TOL):
    """calls: {form: callable}, the first the reference. Every other form must give its output, final state and
    gradients to within tol of the largest reference entry, plus 1e-5 (rounding where a gradient cancels to about 0)."""
    (ref_name, ref_call), *others = calls.items()
    ref = run_with_grads(ref_call, inputs)
    assert all(torch.isfinite(x).all() for x in ref.values())
    for name, call in others:
        got = run_with_grads(call, inputs)
        assert got.keys() == ref.keys()
        for what, expected in ref.items():
            err = (got[what] - expected).abs().max().item()
            bound = tol * expected.abs().max().item() + 1e-5
            assert err <= bound, f"{name} vs {ref_name}: {what} differs by {err:.3g} (bound {bound:.3g})"


def gate(kind, B, T, H, K, seed):
    """Log gates: none, one per head [B, T, H], or one per key dimension [B, T, H, K]."""
    return {"none": None, "head": -rand(B, T, H, seed=seed) * 0.5, "key": -rand(B, T, H, K, seed=seed) * 0.5}[kind]


def linear_inputs(T, gated, initial, B=2, H=2, K=4, V=3, positive=False):
    make = (lambda *s, seed: rand(*s, seed=seed) + 0.1) if positive else randn
    inputs = {"q": make(B, T, H, K, seed=1), "k": make(B, T, H, K, seed=2), "v": randn(B, T, H, V, seed=3)}
    if gated != "none":
        inputs["g"] = gate(gated, B, T, H, K, seed=4)
    if initial:  # positive, so a normaliser column in it stays a normaliser
        inputs["initial_state"] = rand(B, H, K, V + positive, seed=5)
    return inputs


def use_chunk_size(monkeypatch, chunk_size=CHUNK):
    """Make the dispatch's chunked form use small chunks, so short sequences span several."""
    from linearize.kernels.linear_attn import dispatch

    monkeypatch.setitem(dispatch.TORCH_FORMS, "chunk", partial(chunk_linear_attn, chunk_size=chunk_size))


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("gated", ["none", "head", "key"])
@pytest.mark.parametrize("T", LENGTHS)
def test_linear_attn_gradients(T, gated, initial):
    def form(name, **kw):
        return lambda **x: TORCH_FORMS[name](**x, scale=0.7, output_final_state=True, **kw)

    calls = {"naive": form("naive"), "chunk": form("chunk", chunk_size=CHUNK), "recurrent": form("recurrent")}
    assert_forms_agree(calls, linear_inputs(T, gated, initial))


@pytest.mark.parametrize("gated", ["none", "head", "key"])
@pytest.mark.parametrize("T", [1, 21])
def test_normalized_linear_attn_gradients(T, gated, monkeypatch):
    use_chunk_size(monkeypatch)

    def form(name):
        return lambda **x: normalized_linear_attn(**x, output_final_state=True, mode=name)

    calls = {name: form(name) for name in TORCH_FORMS}
    assert_forms_agree(calls, linear_inputs(T, gated, initial=True, positive=True))


def window_grad_inputs(T, window, decay, sinks, context, B=2, H=2, D=4, F=5, V=3, S=3):
    """Inputs of the window forms. context: 'plain' (no mask, no past), 'mask' (left padding in the second row)
    or 'past' (the previous window, up to window - 1 tokens, a linear state, and a mask over both)."""
    P = min(window - 1, 6) if context == "past" else 0
    x = {
        "q": randn(B, T, H, D, seed=1),
        "k": randn(B, T, H, D, seed=2),
        "fq": rand(B, T, H, F, seed=3),
        "fk": rand(B, T, H, F, seed=4),
        "v": randn(B, T, H, V, seed=5),
        "factor": torch.tensor([0.3, 0.8]),
    }
    if context != "plain":
        mask = torch.ones(B, P + T, dtype=torch.bool)
        mask[1, : min(3, P + T - 1)] = False
        x["key_mask"] = mask
    if context == "past":
        x["initial_state"] = rand(B, H, F, V + 1, seed=6)
        if P:
            x.update(
                past_k=randn(B, P, H, D, seed=7), past_fk=rand(B, P, H, F, seed=8), past_v=randn(B, P, H, V, seed=9)
            )
    if decay:
        x["log_decay"] = torch.tensor([0.9, 0.7]).log()
    if sinks:
        visible = (torch.arange(S)[None, :] <= torch.arange(T)[:, None]).expand(B, T, S).clone()
        visible[1, :, 1] = False
        x.update(sink_k=randn(B, S, H, D, seed=10), sink_v=randn(B, S, H, V, seed=11), sink_visible=visible)
    return x


def window_call(fn, window, **kw):
    """Adapts a window form to flat inputs (past_* and sink_* gathered into its tuples)."""

    def call(q, k, fq, fk, v, factor, **x):
        if "past_k" in x:
            x["past"] = (x.pop("past_k"), x.pop("past_fk"), x.pop("past_v"))
        if "sink_k" in x:
            x["sinks"] = (x.pop("sink_k"), x.pop("sink_v"), x.pop("sink_visible"))
        return fn(q, k, fq, fk, v, factor, window, 0.35, **x, **kw)

    return call


@pytest.mark.parametrize("context", ["plain", "mask", "past"])
@pytest.mark.parametrize("sinks", [False, True])
@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("T,window", [(1, 1), (1, 4), (7, 1), (7, 30), (21, 4), (21, 9)])
def test_window_attn_gradients(T, window, decay, sinks, context):
    calls = {
        "naive": window_call(naive_window_attn, window),
        "chunk": window_call(chunk_window_attn, window, chunk_size=CHUNK),
        "recurrent": window_call(recurrent_window_attn, window),
    }
    if T == 1:  # decode: the one-query step against the window that holds its token
        calls["step"] = window_call(step_as_form, window)
    assert_forms_agree(calls, window_grad_inputs(T, window, decay, sinks, context))


def softmax_call(fn, window, **kw):
    """A form of the window's softmax alone (``window_softmax``) on the window forms' flat inputs; it keeps no state,
    which ``run_with_grads`` takes as a constant zero."""

    def call(q, k, v, **x):
        if "past_k" in x:
            x["past"] = (x.pop("past_k"), x.pop("past_v"))
        if "sink_k" in x:
            x["sinks"] = (x.pop("sink_k"), x.pop("sink_v"), x.pop("sink_visible"))
        return fn(q, k, v, window, 0.35, **x, **kw), q.new_zeros(1)

    return call


@pytest.mark.parametrize("context", ["plain", "mask", "past"])
@pytest.mark.parametrize("sinks", [False, True])
@pytest.mark.parametrize("T,window", [(1, 4), (7, 1), (7, 30), (21, 4), (21, 9)])
def test_window_softmax_gradients(T, window, sinks, context):
    """The window's softmax alone (what Liger's mix takes): its three forms and the dispatch's decode form agree in
    outputs and gradients, and equal the hybrid with its linear part switched off (factor 1)."""
    x = window_grad_inputs(T, window, False, sinks, context)
    x = {n: t for n, t in x.items() if n in ("q", "k", "v", "key_mask") or n.startswith(("past_k", "past_v", "sink_"))}
    calls = {name: softmax_call(fn, window) for name, fn in SOFTMAX_FORMS.items()}
    calls["chunk"] = softmax_call(SOFTMAX_FORMS["chunk"], window, chunk_size=CHUNK)
    calls["auto"] = softmax_call(window_softmax, window, mode="auto")
    assert_forms_agree(calls, x)
    hybrid = window_grad_inputs(T, window, False, sinks, context)
    hybrid["factor"] = torch.ones(2)
    hybrid.pop("initial_state", None)
    expected, _ = window_call(naive_window_attn, window)(**hybrid)
    torch.testing.assert_close(calls["naive"](**x)[0], expected, atol=1e-5, rtol=1e-5)


def delta_grad_inputs(T, gated, initial, B=2, H=2, K=4, V=3):
    x = {
        "q": randn(B, T, H, K, seed=1),
        "k": torch.nn.functional.normalize(randn(B, T, H, K, seed=2), dim=-1),
        "v": randn(B, T, H, V, seed=3),
        "beta": rand(B, T, H, seed=4),
    }
    if gated:
        x["g"] = gate("head", B, T, H, K, seed=5)
    if initial:
        x["initial_state"] = randn(B, H, K, V, seed=6) * 0.3
    return x


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("T", LENGTHS)
def test_gated_delta_gradients(T, gated, initial):
    def form(name, **kw):
        return lambda **x: DELTA_FORMS[name](**x, scale=0.5, output_final_state=True, **kw)

    calls = {"naive": form("naive"), "chunk": form("chunk", chunk_size=CHUNK), "recurrent": form("recurrent")}
    assert_forms_agree(calls, delta_grad_inputs(T, gated, initial))


def ssd_inputs(T, initial, b=2, h=2, n=4, p=3):
    x = {
        "C": randn(b, T, h, n, seed=1),
        "B": randn(b, T, h, n, seed=2),
        "x": randn(b, T, h, p, seed=3),
        "dt": rand(b, T, h, seed=4) * 0.5 + 0.05,
        "A_log": randn(h, seed=5) * 0.5,
        "D": randn(h, seed=6),
    }
    if initial:
        x["initial_state"] = randn(b, h, n, p, seed=7)
    return x


def ssd_as_linear_attn(C, B, x, dt, A_log, D, initial_state=None):
    """The scan as the linear attention fla runs it on CUDA (keys dt*B, log decays dt*A), in its naive form."""
    y, state = linear_attn(
        C,
        B * dt[..., None],
        x,
        g=-torch.exp(A_log) * dt,
        initial_state=initial_state,
        output_final_state=True,
        mode="naive",
    )
    return y + D[:, None] * x, state


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("T", LENGTHS)
def test_ssd_gradients(T, initial):
    """The dispatch's naive (token loop), recurrent and Mamba-2's own chunked form (``chunk_ssd``), and the scan run
    as linear attention."""

    def form(name):
        return lambda **x: ssd(**x, output_final_state=True, mode=name)

    calls = {name: form(name) for name in TORCH_FORMS}
    calls["chunk"] = lambda **x: chunk_ssd(**x, output_final_state=True, chunk_size=CHUNK)
    calls["as linear attention"] = ssd_as_linear_attn
    assert_forms_agree(calls, ssd_inputs(T, initial))


def token_by_token(step, per_token, prefill=None, split=0):
    """A form run as decoding runs it: ``prefill`` on the first ``split`` tokens (if any), then ``step`` on one
    token at a time, each call given the state the previous one returned. per_token: the inputs with a time axis."""

    def call(initial_state=None, **x):
        T = x[per_token[0]].shape[1]
        spans = ([(prefill, 0, split)] if split else []) + [(step, t, t + 1) for t in range(split, T)]
        outputs, state = [], initial_state
        for fn, start, end in spans:
            part = {n: t[:, start:end] if n in per_token else t for n, t in x.items()}
            o, state = fn(**part, initial_state=state)
            outputs.append(o)
        return torch.cat(outputs, 1), state

    return call


SSD_PER_TOKEN = ("C", "B", "x", "dt")
DELTA_PER_TOKEN = ("q", "k", "v", "beta", "g")


def left_padded(inputs, zeroed, pad=3):
    """The second row left-padded by ``pad`` tokens, as the mixers feed padding: ``zeroed`` inputs are 0 there
    (ssd: dt, so a padded step neither decays nor writes; the delta rule: beta and g)."""
    inputs = dict(inputs)
    for n in zeroed:
        if n in inputs:
            inputs[n] = inputs[n].clone()
            inputs[n][1, :pad] = 0
    return inputs


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("initial", [False, True])  # decoding from a zero state, or from a carried one
@pytest.mark.parametrize("T", LENGTHS)
def test_ssd_token_by_token(T, initial, padded):
    """One-token calls of the recurrent form (the decode step), alone or after a chunked prefill, give the naive
    form's outputs, final state and gradients."""

    def form(name, **kw):
        return lambda **x: TORCH_FORMS_SSD[name](**x, output_final_state=True, **kw)

    calls = {"naive": form("naive"), "steps": token_by_token(form("recurrent"), SSD_PER_TOKEN)}
    if T > 1:
        calls["chunked prefill, then steps"] = token_by_token(
            form("recurrent"), SSD_PER_TOKEN, prefill=form("chunk", chunk_size=CHUNK), split=T // 2 + 1
        )
    inputs = ssd_inputs(T, initial)
    assert_forms_agree(calls, left_padded(inputs, ["dt"]) if padded else inputs)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("T", LENGTHS)
def test_gated_delta_token_by_token(T, gated, initial, padded):
    """As ``test_ssd_token_by_token``, for the gated delta rule."""

    def form(name, **kw):
        return lambda **x: DELTA_FORMS[name](**x, scale=0.5, output_final_state=True, **kw)

    calls = {"naive": form("naive"), "steps": token_by_token(form("recurrent"), DELTA_PER_TOKEN)}
    if T > 1:
        calls["chunked prefill, then steps"] = token_by_token(
            form("recurrent"), DELTA_PER_TOKEN, prefill=form("chunk", chunk_size=CHUNK), split=T // 2 + 1
        )
    inputs = delta_grad_inputs(T, gated, initial)
    assert_forms_agree(calls, left_padded(inputs, ["beta", "g"]) if padded else inputs)


@pytest.mark.parametrize("recurrence", ["ssd", "delta"])
def test_left_padding_leaves_the_state_alone(recurrence):
    """A padded step (ssd: dt = 0; the delta rule: beta = 0, g = 0) neither decays nor writes the state, in every
    form: the padded row's final state is that of its tokens alone."""
    pad, T = 3, 21
    if recurrence == "ssd":
        inputs, per_token, forms = left_padded(ssd_inputs(T, True), ["dt"], pad), SSD_PER_TOKEN, TORCH_FORMS_SSD
        kwargs = {}
    else:
        inputs, per_token, forms = (
            left_padded(delta_grad_inputs(T, True, True), ["beta", "g"], pad),
            DELTA_PER_TOKEN,
            DELTA_FORMS,
        )
        kwargs = {"scale": 0.5}
    alone = {n: (t[1:, pad:] if n in per_token else t[1:] if n == "initial_state" else t) for n, t in inputs.items()}
    _, expected = forms["naive"](**alone, output_final_state=True, **kwargs)
    for name, fn in forms.items():
        _, state = fn(**inputs, output_final_state=True, **kwargs)
        assert (state[1:] - expected).abs().max() < TOL, name


def test_decode_steps_keep_their_state_in_fp32():
    """In bf16 the one-token steps return bf16 outputs and an fp32 state, computed as in fp32 from the same
    (rounded) inputs."""
    ssd_in = {n: t.bfloat16() if n in SSD_PER_TOKEN else t for n, t in ssd_inputs(1, True).items()}
    delta_in = {n: t.bfloat16() if n in DELTA_PER_TOKEN else t for n, t in delta_grad_inputs(1, True, True).items()}
    step = {n: t[:, 0] if n in SSD_PER_TOKEN else t for n, t in ssd_in.items()}
    y, state = ssd_step(**{**{n: t for n, t in step.items() if n != "initial_state"}, "state": step["initial_state"]})
    y32, state32 = ssd_step(
        **{n: t.float() for n, t in step.items() if n != "initial_state"}, state=step["initial_state"]
    )
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
    assert torch.equal(state, state32) and torch.equal(y, y32.bfloat16())
    step = {n: t[:, 0] if n in DELTA_PER_TOKEN else t for n, t in delta_in.items()}
    o, state = gated_delta_step(
        **{n: t for n, t in step.items() if n != "initial_state"}, scale=0.5, state=step["initial_state"]
    )
    o32, state32 = gated_delta_step(
        **{n: t.float() for n, t in step.items() if n != "initial_state"}, scale=0.5, state=step["initial_state"]
    )
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    assert torch.equal(state, state32) and torch.equal(o, o32.bfloat16())
    for form, x in (("ssd", ssd_in), ("delta", delta_in)):  # and through each dispatch, as a mixer's decode calls it
        call = ssd if form == "ssd" else partial(gated_delta, scale=0.5)
        out, state = call(**x, output_final_state=True, mode="auto")
        assert out.dtype == torch.bfloat16 and state.dtype == torch.float32, form


# 'auto' on CPU (the chunked form, default chunk size, for prefill; the recurrent one for a single token) gives the
# naive form's values and gradients through each dispatch function.


@pytest.mark.parametrize("T", [1, 70])
def test_linear_attn_auto_gradients(T):
    def form(mode):
        return lambda **x: linear_attn(**x, scale=0.7, output_final_state=True, mode=mode)

    assert_forms_agree({"naive": form("naive"), "auto": form("auto")}, linear_inputs(T, "head", initial=True))


@pytest.mark.parametrize("T,context", [(1, "past"), (21, "mask"), (70, "past")])
def test_window_attn_auto_gradients(T, context):
    calls = {"naive": window_call(window_attn, 4, mode="naive"), "auto": window_call(window_attn, 4, mode="auto")}
    assert_forms_agree(calls, window_grad_inputs(T, 4, True, True, context))


@pytest.mark.parametrize("T", [1, 70])
def test_gated_delta_auto_gradients(T):
    def form(mode):
        return lambda **x: gated_delta(**x, scale=0.5, output_final_state=True, mode=mode)

    assert_forms_agree({"naive": form("naive"), "auto": form("auto")}, delta_grad_inputs(T, True, True))


@pytest.mark.parametrize("T", [1, 70, 300])  # 300: Mamba-2's chunked form's default chunks (256) and a remainder
def test_ssd_auto_gradients(T):
    def form(mode):
        return lambda **x: ssd(**x, output_final_state=True, mode=mode)

    assert_forms_agree({"naive": form("naive"), "auto": form("auto")}, ssd_inputs(T, True))


@pytest.mark.parametrize("with_sinks", [False, True])
def test_window_step_reads_keys_at_their_own_heads(with_sinks):
    """The decode step on a window cached at the key/value heads (GQA: 6 query heads read 2 key heads, in
    repeat_kv's order) equals the step on the same window repeated to the query heads, output and state."""
    g = torch.Generator().manual_seed(7)
    B, N, H, Hkv, D, F_ = 2, 5, 6, 2, 4, 6
    q, fq = torch.randn(B, 1, H, D, generator=g), torch.rand(B, 1, H, F_, generator=g)
    keys, values = torch.randn(B, Hkv, N, D, generator=g), with_ones(torch.randn(B, Hkv, N, D, generator=g))
    factor, evicted = torch.rand(H, generator=g), torch.rand(B, H, F_, generator=g)
    state = torch.rand(B, H, F_, D + 1, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, :2] = False
    sinks = rep_sinks = None
    if with_sinks:
        sinks = (
            torch.randn(B, Hkv, 3, D, generator=g),
            with_ones(torch.randn(B, Hkv, 3, D, generator=g)),
            torch.tensor([[[True, True, False]], [[True, False, False]]]),
        )
    rep = lambda x, dim=1: x.repeat_interleave(H // Hkv, dim=dim)  # noqa: E731 repeat_kv's order
    if with_sinks:  # sinks are head-major [B, Hkv, S, D], as the sink store holds them
        rep_sinks = (rep(sinks[0]), rep(sinks[1]), sinks[2])
    kwargs = dict(key_mask=mask, initial_state=state, log_decay=LOG_DECAY.repeat(2), evicted=evicted)
    o, s = step_window_attn(q, fq, keys, values, factor, N, 0.5, sinks=sinks, **kwargs)
    ref, ref_s = step_window_attn(q, fq, rep(keys), rep(values), factor, N, 0.5, sinks=rep_sinks, **kwargs)
    torch.testing.assert_close(o, ref)
    torch.testing.assert_close(s, ref_s)
    assert not torch.equal(s, state)  # the evicted key entered the state (not in place: autograd may be on)
    if with_sinks:  # visible None means every sink visible, with or without a key mask
        every = (sinks[0], sinks[1], torch.ones_like(sinks[2]))
        for mask in (None, mask):
            kw = {**kwargs, "key_mask": mask}
            o, s = step_window_attn(q, fq, keys, values, factor, N, 0.5, sinks=(*sinks[:2], None), **kw)
            ref, ref_s = step_window_attn(q, fq, keys, values, factor, N, 0.5, sinks=every, **kw)
            torch.testing.assert_close(o, ref)
            torch.testing.assert_close(s, ref_s)
