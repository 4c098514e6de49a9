"""The conventions every transformers model keeps, which users' code and the libraries around it (TRL, peft,
lm-eval, accelerate) rely on: a config that builds without arguments, hidden states on request, tuples on request,
``use_cache`` from the config, the ``past_key_values`` deprecation, a clear refusal of assisted decoding, and a
gradient for every trainable parameter however short the batch. transformers' own common tests check them too
(tests/convert/test_transformers_suite.py); these say what each one means for a converted model."""

import warnings

import pytest
import torch

from linearize.convert.configuration_linearized import LinearizedConfig
from linearize.convert.convert import convert
from linearize.convert.targets import MIXERS

from helpers import WINDOWED, assert_close, perturb_new_parameters, tiny_base, tiny_settings


def windowed(layers=2, **settings):
    """A tiny Llama with its last layer converted to LoLCATs, window 2, one sink and a decay: at a few tokens the
    linear state is already in use."""
    settings = settings or {"window": 2, "sinks": 1, "decay": 16}
    return perturb_new_parameters(convert(tiny_base("llama", layers=layers), "lolcats", keep_attention="0", **settings))


def test_config_builds_without_arguments_and_round_trips():
    empty = LinearizedConfig()
    assert empty.mixers == [] and empty.use_cache
    config = windowed().config
    again = LinearizedConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


def test_hidden_states_are_the_decoder_layers_inputs_and_the_final_output():
    model = windowed(layers=3).eval()
    ids = torch.randint(3, 128, (2, 9))
    seen = []
    hooks = [layer.register_forward_hook(lambda m, a, out: seen.append(out)) for layer in model.model.layers]
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    assert len(out.hidden_states) == 4
    assert_close(out.hidden_states[0], model.model.embed_tokens(ids), 0)
    for got, want in zip(out.hidden_states[1:-1], seen[:-1]):
        assert_close(got, want, 0)
    assert_close(out.hidden_states[-1], model.model.norm(seen[-1]), 0)  # the last one after the final norm, as Llama
    assert model(ids).hidden_states is None
    model.config.output_hidden_states = True
    assert len(model(ids).hidden_states) == 4


def test_attentions_are_the_kept_softmax_layers_maps():
    model = convert(tiny_base("llama", layers=3), "lolcats", keep_attention="0,2")
    model.set_attn_implementation("eager")  # SDPA computes no maps, as for Llama
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        maps = model.eval()(ids, output_attentions=True).attentions
    assert len(maps) == 2 and maps[0].shape == (2, 6, 9, 9)  # a converted layer has no attention matrix
    assert_close(maps[1].sum(-1), torch.ones(2, 6, 9), 1e-5)


def test_return_dict_false_gives_the_outputs_as_a_tuple():
    model = windowed().eval()
    ids = torch.randint(3, 128, (1, 7))
    with torch.no_grad():
        full = model(ids, labels=ids)
        plain = model(ids, labels=ids, return_dict=False)
        base = model.model(ids, return_dict=False)
    assert isinstance(plain, tuple) and isinstance(base, tuple)
    assert_close(plain[0], full.loss, 0)
    assert_close(plain[1], full.logits, 0)
    model.config.return_dict = False
    assert isinstance(model(ids), tuple)


def test_use_cache_follows_the_base_config_outside_training_only():
    model = windowed().eval()
    ids = torch.randint(3, 128, (1, 7))
    assert model.config.use_cache and model(ids).cache is not None
    assert model.train()(ids).cache is None  # a training forward keeps no state unless asked
    assert model(ids, use_cache=True).cache is not None
    base = tiny_base("llama", layers=2)
    base.config.use_cache = False
    quiet = convert(base, "lolcats", keep_attention="0").eval()
    assert not quiet.config.use_cache and quiet(ids).cache is None


def test_past_key_values_is_deprecated_for_cache_and_still_works():
    model = windowed().eval()
    ids = torch.randint(3, 128, (1, 8))
    with torch.no_grad():
        prefix = model(ids[:, :7], use_cache=True)
        want = model(ids[:, 7:], cache=prefix.cache).logits
        prefix = model(ids[:, :7], use_cache=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = model(ids[:, 7:], past_key_values=prefix.cache).logits
    assert any(issubclass(w.category, FutureWarning) and "past_key_values" in str(w.message) for w in caught)
    assert_close(got, want, 0)


def test_assisted_decoding_is_refused_before_any_forward():
    model, assistant = windowed().eval(), windowed().eval()
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match="ASSISTED_GENERATION"):
        model.generate(torch.randint(3, 128, (1, 5)), assistant_model=assistant, max_new_tokens=3, do_sample=False)
    assert not calls
    kept = convert(tiny_base("llama", layers=2), "lolcats", keep_attention="0,1")  # nothing converted: allowed
    assert "assisted_generation" in kept._supported_generation_modes  # an ExplicitEnum equals its value


@pytest.mark.parametrize(
    "target,settings",
    [(t, None) for t in MIXERS]
    + [("lolcats", {}), ("lolcats", {"window": 2, "sinks": 1})]
    + [(t, {"window": 2, "sinks": 1}) for t in WINDOWED],
)
def test_every_trainable_parameter_gets_a_gradient_on_a_short_batch(target, settings):
    """A sequence shorter than the window never reaches the key feature map's linear part: its gradient is then zero,
    which data-parallel training and transformers' checks expect, not missing."""
    base = tiny_base("llama", layers=2)
    model = convert(base, target, keep_attention="0", **(tiny_settings(base, target) if settings is None else settings))
    model.train()
    ids = torch.randint(3, 128, (2, 5))
    model(ids, labels=ids).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
