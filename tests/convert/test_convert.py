"""Converted models on tiny random bases of every family: reuse of weights, cache == no cache, generate."""

import pytest
import torch
from transformers import DynamicCache

import linearize.convert.auto  # noqa: F401  (registers the Auto classes)
from linearize.convert.convert import convert
from linearize.convert.plan import PlanError, parse_keep_attention
from linearize.convert.targets import MIXERS

from helpers import CASES, WINDOWED, assert_close, case, perturb_new_parameters, tiny_base

TARGETS = CASES  # every target, and those whose window mixes Liger's way with a window too ("gla+window", ...)
TOL = 1e-4


def converted(family, target, keep=None, seed=0):
    """A tiny base of ``family`` and its conversion to ``target`` (a ``CASES`` name), new parameters perturbed."""
    base = tiny_base(family, seed)
    target, settings = case(base, target)
    return base, perturb_new_parameters(convert(base, target, keep_attention=keep, **settings))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("keep", [None, "1"])
def test_cached_decode_matches_full_forward(family, target, keep):
    """Prefill, then 32 single-token steps through the cache == one cache-free forward (1e-4)."""
    _, model = converted(family, target, keep)
    ids = torch.randint(3, 128, (2, 41), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :9], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(9, 41)]
    assert_close(torch.cat(steps, 1), full, TOL)


def decode_vs_forward(model, ids, split=9):
    """Largest logit difference between prefill + one-token cached steps and one cache-free forward."""
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :split], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(split, ids.shape[1])]
    return (torch.cat(steps, 1) - full).abs().max().item()


def test_step_rotation_and_projections_equal_rotary_values_and_gradients(family):
    """A decode step's rotary as one product with the model's ``step_rotation`` (rows at different positions, as
    under left padding) equals the family's own rotary, in values and in gradients; ``step_qkv`` (head-major keys
    and values, Qwen3's q/k norms included) equals ``qkv`` then rotary."""
    from linearize.convert.mixer_base import step_rotation

    _, model = converted(family, "lolcats")
    mixer, inner = model.mixers()[0], model.model
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, model.config.hidden_size, generator=g)
    positions = torch.tensor([[5], [17]])
    cos_sin = inner.rotary_emb(x, positions)
    rotation = step_rotation(inner.apply_rotary, *cos_sin, 2)
    q, k, _ = mixer.qkv(x)
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    ref = mixer.apply_rotary(q, k, *cos_sin, unsqueeze_dim=2)
    out = mixer.rotate(q, k, cos_sin, rotation)
    w = [torch.randn(t.shape, generator=g) for t in ref]
    grads = [torch.autograd.grad(sum((a * b).sum() for a, b in zip(o, w)), (q, k)) for o in (ref, out)]
    for a, b in zip(out + grads[1], ref + grads[0]):
        assert_close(a, b, 1e-6)
    with torch.no_grad():
        sq, sk, sv = mixer.step_qkv(x, cos_sin, rotation)
        q, k, v = mixer.qkv(x)
        q, k = mixer.apply_rotary(q, k, *cos_sin, unsqueeze_dim=2)
    assert_close(sq, q[:, 0], 1e-6)
    assert_close(sk, k.transpose(1, 2), 1e-6)
    assert_close(sv, v.transpose(1, 2), 0)
    assert_close(mixer.step_qkv(x, cos_sin)[0], q[:, 0], 1e-6)  # without the matrix: the family's rotary


def test_decode_step_projections_equal_the_modules_and_step_aside_for_hooks_and_adapters(family):
    """A decode step without autograd projects by transposed weight views made at the cache's first step and kept
    on its layer for the later ones (a reset drops them): bit for bit the modules' products (Qwen2's biases
    included). A new cache sees a weight replaced or given new storage; a forward hook or peft's unmerged LoRA
    layers make the steps call the modules, and decode still scores as the cache-free forward does."""
    from peft import LoraConfig, get_peft_model

    _, model = converted(family, "lolcats")
    model.eval()
    mixer, inner = model.mixers()[0], model.model
    ids = torch.randint(3, 128, (2, 21), generator=torch.Generator().manual_seed(9))
    x = torch.randn(2, 1, model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    cos_sin = inner.rotary_emb(x, torch.tensor([[5], [17]]))
    with torch.no_grad():
        linears = mixer.step_projections()
        assert linears is not None
        for a, b in zip(mixer.step_qkv(x, cos_sin, linears=linears), mixer.step_qkv(x, cos_sin)):
            assert torch.equal(a, b)
        o = torch.randn(2, mixer.num_heads * mixer.head_dim, generator=torch.Generator().manual_seed(1))
        assert torch.equal(mixer.project_o(o, linears), mixer.o_proj(o))
        cache = DynamicCache(config=model.config)
        model(ids[:, :9], cache=cache, use_cache=True)
        layer = cache.layers[mixer.layer_idx]
        assert layer.step_kept is None  # a prefill keeps nothing
        model(ids[:, 9:10], cache=cache, use_cache=True)
        kept = layer.step_kept
        model(ids[:, 10:11], cache=cache, use_cache=True)
        assert kept is not None and kept.projections is not None and layer.step_kept is kept
        cache.reset()
        assert layer.step_kept is None
    assert decode_vs_forward(model, ids) < TOL

    g = torch.Generator().manual_seed(2)
    mixer.k_proj.weight = torch.nn.Parameter(torch.randn(mixer.k_proj.weight.shape, generator=g) * 0.2)
    assert decode_vs_forward(model, ids) < TOL
    mixer.q_proj.weight.data = torch.randn(mixer.q_proj.weight.shape, generator=g) * 0.2  # new storage, same parameter
    assert decode_vs_forward(model, ids) < TOL
    with torch.no_grad():
        assert mixer.step_projections()[0][1].data_ptr() == mixer.q_proj.weight.data_ptr()

    calls = []
    hook = mixer.o_proj.register_forward_hook(lambda module, args, out: calls.append(1) or 2 * out)
    assert decode_vs_forward(model, ids) < TOL and len(calls) == 1 + 1 + (ids.shape[1] - 9)  # full, prefill, steps
    with torch.no_grad():
        assert mixer.step_projections() is None
    hook.remove()
    forward = mixer.v_proj.forward
    mixer.v_proj.forward = lambda x: forward(x) + 1.0  # as accelerate's hooks do: the instance's forward replaced
    with torch.no_grad():
        assert mixer.step_projections() is None
    assert decode_vs_forward(model, ids) < TOL
    del mixer.v_proj.forward

    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    )
    lora = peft_model.get_base_model()
    with torch.no_grad():
        assert lora.mixers()[0].step_projections() is None
    assert decode_vs_forward(lora, ids) < TOL


@pytest.mark.parametrize("target", TARGETS)
def test_beam_search_through_the_cache_equals_beam_search_without_it(target):
    """generate(num_beams=3) reorders the cache's states and windows by beam every step (transformers'
    reorder_cache on our layers, and the steps' kept values): the same beams as without a cache."""
    _, model = converted("llama", target)
    model.eval()
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(1))
    settings = dict(
        attention_mask=torch.ones_like(ids),
        max_new_tokens=10,
        min_new_tokens=10,
        num_beams=3,
        do_sample=False,
        pad_token_id=0,
    )
    assert torch.equal(model.generate(ids, **settings), model.generate(ids, use_cache=False, **settings))


def test_decode_follows_feature_map_weights_changed_after_a_decode():
    """Plain LoLCATs (window 4, no decay or sinks) decodes through Hedgehog's fused step weights; after an
    in-place update, a state-dict load and a dtype change of the maps' weights, the step's features still equal
    the maps' own forwards and decode the cache-free forward (a stale fused weight would not)."""
    base = tiny_base("llama")
    model = perturb_new_parameters(convert(base, "lolcats", window=4))
    ids = torch.randint(3, 128, (2, 21), generator=torch.Generator().manual_seed(5))
    mixer = model.mixers()[0]
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 1, mixer.num_heads, mixer.head_dim, generator=g)
    k = torch.randn(2, mixer.num_kv_heads, 1, mixer.head_dim, generator=g)  # the leaving key, as the cache holds it

    def features_match():
        with torch.no_grad():
            weights = mixer.step_map_weights(model.dtype)
            fq, fk = mixer.step_features(q.to(model.dtype), k.to(model.dtype), weights)  # the kept stacked weights
        with torch.enable_grad():
            ref_q, ref_k = mixer.step_features(q.to(model.dtype), k.to(model.dtype))  # the maps' forwards
        same = lambda x, ref: torch.allclose(x.reshape(ref.shape), ref, atol=1e-6)  # noqa: E731 [B, H] order first
        with torch.no_grad():  # one sequence takes views where a batch permutes
            fq1, fk1 = mixer.step_features(q[1:].to(model.dtype), k[1:].to(model.dtype), weights)
        return (
            weights is not None
            and same(fq, ref_q)
            and same(fk, ref_k)
            and same(fq1, ref_q[1:])
            and same(fk1, ref_k[1:])
        )

    assert features_match() and decode_vs_forward(model, ids) < TOL
    with torch.no_grad():
        mixer.feature_map_k.weight.mul_(-1.7)  # as an optimizer step would: in place
    assert features_match() and decode_vs_forward(model, ids) < TOL
    sd = {k: v + 0.5 * torch.randn_like(v) for k, v in mixer.feature_map_q.state_dict().items()}
    mixer.feature_map_q.load_state_dict(sd)
    assert features_match() and decode_vs_forward(model, ids) < TOL
    model.to(torch.float64)
    assert decode_vs_forward(model, ids) < TOL  # the fused weight follows the dtype (bmm refuses mixed ones)


def test_plain_lolcats_generate_with_a_padded_mask_matches_the_forward():
    """generate passes an attention mask: a decode step whose window holds a padded key keeps it, one whose
    window is all real tokens drops it (CPU); both score every step as the cache-free forward does."""
    model = perturb_new_parameters(convert(tiny_base("llama"), "lolcats", window=4))
    ids = torch.randint(3, 128, (2, 4), generator=torch.Generator().manual_seed(8))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding: the second row's first decode windows hold a padded key
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=10,
        min_new_tokens=10,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        full = model(out.sequences, attention_mask=torch.cat([mask, torch.ones(2, 10, dtype=mask.dtype)], 1)).logits
    assert_close(torch.stack(out.logits, 1), full[:, 3:-1], TOL)


@pytest.mark.parametrize("target", TARGETS)
def test_forms_agree_inside_the_model(target):
    """The mixers' parallel, chunked and recurrent forms give the same logits, and the same gradients of every
    trainable parameter (left padding in one row, so masked keys and windows are exercised too)."""
    _, model = converted("llama", target)
    ids = torch.randint(3, 128, (2, 30), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    params = [p for p in model.parameters() if p.requires_grad]
    outs, grads = {}, {}
    for mode in ("naive", "chunk", "recurrent"):
        for mixer in model.mixers().values():
            mixer.mode = mode
        outs[mode] = model(ids, attention_mask=mask).logits
        grads[mode] = torch.autograd.grad(outs[mode].pow(2).mean(), params, allow_unused=True)
    for mode in ("chunk", "recurrent"):
        assert_close(outs[mode], outs["naive"], TOL)
        for p, got, want in zip(params, grads[mode], grads["naive"]):
            assert (got is None) == (want is None)
            if want is not None:
                assert_close(got, want, TOL * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", [False, True])
def test_generate_logits_match_cache_free_forward(target, sample):
    """generate() (greedy and sampling) with the cache scores every step as a full forward would."""
    _, model = converted("qwen3", target, keep="0")
    ids = torch.randint(3, 128, (1, 7), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=32,
        do_sample=sample,
        min_new_tokens=32,
        output_logits=True,
        return_dict_in_generate=True,
        top_k=0,
    )
    assert out.sequences.shape == (1, 39)
    with torch.no_grad():
        full = model(out.sequences).logits
    assert_close(torch.stack(out.logits, 1), full[:, 6:-1], TOL)


@pytest.mark.parametrize("target", TARGETS)
def test_left_padded_batch_matches_rows_alone(family, target):
    _, model = converted(family, target, keep="-1")
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(3, 128, (n,), generator=g) for n in (11, 5)]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]) for r in rows]).long()
    kw = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True)
    batch = model.generate(ids, attention_mask=mask, **kw)
    for i, r in enumerate(rows):
        alone = model.generate(r[None], attention_mask=torch.ones(1, len(r), dtype=torch.long), **kw)
        assert torch.equal(batch.sequences[i, width:], alone.sequences[0, len(r) :])
        assert_close(torch.stack(batch.logits, 1)[i], torch.stack(alone.logits, 1)[0], TOL)


# Every target that takes --window and --sinks.
WINDOW_TARGETS = ("linear", "t2r", "hedgehog", "lolcats", *WINDOWED)


@pytest.mark.parametrize("target", WINDOW_TARGETS)
def test_window_and_sinks_are_used_and_recorded(tmp_path, target):
    """A target that takes --window and --sinks uses both: another window, or other sinks, give other logits (the
    same new parameters, perturbed alike); the cache transformers builds from the config holds the window and the
    sink store; and a saved checkpoint loads with both and gives the same logits."""
    from transformers import AutoModelForCausalLM

    base = tiny_base("llama")
    ids = torch.randint(3, 128, (1, 16), generator=torch.Generator().manual_seed(2))

    def logits(**settings):
        model = perturb_new_parameters(convert(base, target, **settings))
        with torch.no_grad():
            return model, model(ids).logits

    model, windowed = logits(window=4, sinks=2)
    for other in ({"window": 4}, {"window": 4, "sinks": 3}, {"window": 6, "sinks": 2}):
        assert (logits(**other)[1] - windowed).abs().max() > 1e-3, other
    assert [(m["window"], m["sinks"]) for m in model.config.mixers] == [(4, 2)] * 3
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert [(m.window, m.sinks) for m in loaded.mixers().values()] == [(4, 2)] * 3
    layers = DynamicCache(config=loaded.config).layers
    assert [(type(c).__name__, c.sliding_window, c.number_of_states) for c in layers] == [
        ("LinearAttentionAndSlidingWindowAttentionLayer", 4, 2)
    ] * 3
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, windowed)


@pytest.mark.parametrize("option", [{"feature_map": "softmax"}, {"rotary": False}, {"normalize": False}])
def test_gla_published_options_are_used_and_recorded(tmp_path, option):
    """Each of Liger's published choices for the linear branch changes the logits and survives a save and load."""
    from transformers import AutoModelForCausalLM

    from linearize.errors import SettingError

    base = tiny_base("llama")
    ids = torch.randint(3, 128, (1, 16), generator=torch.Generator().manual_seed(2))
    model = convert(base, "gla", **option)
    with torch.no_grad():
        logits = model(ids).logits
        assert (logits - convert(base, "gla")(ids).logits).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(m.items() >= option.items() for m in loaded.config.mixers)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, logits)
    with pytest.raises(SettingError, match="bad gla feature_map 'relu'"):
        convert(base, "gla", feature_map="relu")


@pytest.mark.parametrize("target", TARGETS)
def test_non_attention_tensors_are_the_bases(family, target):
    base, model = converted(family, target, keep="0")
    base_sd, sd = base.state_dict(), model.state_dict()
    new = {f"model.layers.{i}.self_attn.{n}" for i, m in model.mixers().items() for n in m.new_parameter_names()}
    for name, tensor in base_sd.items():
        assert torch.equal(sd[name], tensor), name  # q/k/v/o are reused too
    assert set(sd) - set(base_sd) == new
    assert bool(new) == (target not in ("linear", "gla"))  # elu+1 and Liger's key-derived gate add none (no window)


def test_from_attention_shares_the_attention_weights():
    base = tiny_base("qwen3")
    attn = base.model.layers[1].self_attn
    mixer = MIXERS["hedgehog"].from_attention(attn, base.config, 1)
    assert mixer.q_proj is attn.q_proj and mixer.o_proj is attn.o_proj and mixer.k_norm is attn.k_norm


def test_keeping_every_layer_reproduces_the_base(family):
    base = tiny_base(family)
    model = convert(base, "lolcats", keep_attention="0,1,2")
    assert not model.mixers()
    ids = torch.randint(3, 128, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits)


def test_plan_specs():
    assert parse_keep_attention(None, 8) == []
    assert parse_keep_attention("0,-1", 8) == [0, 7]
    assert parse_keep_attention("every:4", 8) == [3, 7]
    assert parse_keep_attention("0.25", 8) == [3, 7]
    assert parse_keep_attention("0.5", 30) == list(range(1, 30, 2))
    for bad in ("8", "-9", "every:0", "1.5", "x,y"):
        with pytest.raises(PlanError, match="bad --keep-attention"):
            parse_keep_attention(bad, 8)


def test_summary_numbers():
    _, model = converted("llama", "linear")
    state, kv = model.cache_bytes(4096)
    # 3 layers x 6 heads x 8 x (8 + 1) fp32 state vs 3 layers x 2 (k, v) x 4096 x 2 kv heads x 8 fp32
    assert state == 3 * 6 * 8 * 9 * 4
    assert kv == 3 * 2 * 4096 * 2 * 8 * 4


def test_qwen2_config_as_shipped_without_head_dim(tmp_path, capsys):
    """Real Qwen2/Qwen2.5 config.json files have no head_dim: convert must size heads and the cache from
    hidden_size / num_attention_heads, as the family's attention does."""
    import json

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from linearize.cli import main

    torch.manual_seed(0)
    base_dir = tmp_path / "qwen2"
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=128,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
        )
    ).save_pretrained(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    config.pop("head_dim", None)
    (base_dir / "config.json").write_text(json.dumps(config))
    assert main(["convert", "--base", str(base_dir), "--to", "lolcats", "--out", str(tmp_path / "out")]) == 0
    assert "decode state per sequence at 4k tokens" in capsys.readouterr().out
