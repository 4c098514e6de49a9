"""Continuing from a returned cache (multi-turn chat with a kept cache) is one uninterrupted generation,
for every target, all layers converted and hybrid; the cache knows its length, and reset empties it."""

import pytest
import torch
from transformers import DynamicCache

from linearize.convert.convert import convert
from linearize.convert.targets import MIXERS

from helpers import assert_close, perturb_new_parameters, tiny_base, tiny_settings


def converted(target, keep):
    base = tiny_base("llama")
    return perturb_new_parameters(convert(base, target, keep_attention=keep, **tiny_settings(base, target)))


def greedy(model, ids, n, cache=None):
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        cache=cache,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )


@pytest.mark.parametrize("target", list(MIXERS))
@pytest.mark.parametrize("keep", [None, "1"])
def test_generation_continues_from_its_returned_cache(target, keep):
    """Turn 1 generates 5 tokens; turn 2 appends 3 user tokens and generates 6 more from turn 1's cache.
    Its tokens and scores equal one generation over the whole conversation without a kept cache."""
    model = converted(target, keep)
    g = torch.Generator().manual_seed(0)
    prompt, user = torch.randint(3, 128, (1, 7), generator=g), torch.randint(3, 128, (1, 3), generator=g)
    first = greedy(model, prompt, 5)
    assert first.cache.get_seq_length() == 7 + 5 - 1  # the last token is sampled, not yet fed
    turn2 = torch.cat([first.sequences, user], 1)
    kept = greedy(model, turn2, 6, cache=first.cache)
    fresh = greedy(model, turn2, 6)
    assert torch.equal(kept.sequences, fresh.sequences)
    assert_close(torch.stack(kept.logits, 1), torch.stack(fresh.logits, 1), 1e-4)


@pytest.mark.parametrize("target", ["lolcats", "gdn", "mamba"])
def test_reset_cache_is_a_fresh_cache(target):
    model = converted(target, None)
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids, cache=cache, use_cache=True)
        assert cache.get_seq_length() == 12
        cache.reset()
        assert cache.get_seq_length() == 0
        again = model(ids, cache=cache, use_cache=True).logits
        assert_close(again, model(ids).logits, 1e-4)


def test_a_cache_filled_by_another_model_is_refused():
    model = converted("gla", None)
    other = DynamicCache(config=model.config)
    other.update_recurrent_state(torch.zeros(1, 6, 8, 9), 0)  # written outside a linearize model
    with pytest.raises(ValueError, match="another model"):
        model(torch.ones(1, 3, dtype=torch.long), cache=other, use_cache=True)
