"""``--sparse-cache N`` (LoLA's sparse cache in a LoLCATs-style layer): used, recorded, refused where it cannot apply.
Its decode, left padding, beam search and bare load run with every target's (the case "lolcats+sparse" in
tests/convert/test_convert.py and test_save_load.py); its selection against references in
tests/kernels/test_sparse_window.py."""

import json

import pytest
import torch
from transformers import DynamicCache

from linearize.card import model_card
from linearize.convert.auto import LinearizedForCausalLM
from linearize.convert.convert import convert, set_sparse_cache
from linearize.convert.linear_mixer import RECORDLESS_SELECT, SPARSE_SELECT
from linearize.convert.settings import ConvertSettings
from linearize.errors import SettingError
from linearize.kernels.window_attn.sparse import SELECTIONS

from helpers import perturb_new_parameters, tiny_base

SETTINGS = {"window": 4, "decay": 16, "sinks": 2, "sparse_chunk": 8}


def test_the_cache_changes_only_what_follows_its_first_selection():
    """Same parameters, with and without 2 cached keys per head: identical logits up to the first selection (after
    position 7, the keys up to position 4 are scored), different after it (the kept keys are read exactly)."""
    base = tiny_base("llama")
    torch.manual_seed(0)
    plain = perturb_new_parameters(convert(base, "lolcats", **SETTINGS))
    torch.manual_seed(0)
    sparse = perturb_new_parameters(convert(base, "lolcats", sparse_cache=2, **SETTINGS))
    ids = torch.randint(3, 128, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = plain(ids).logits, sparse(ids).logits
    torch.testing.assert_close(b[:, :8], a[:, :8], atol=1e-5, rtol=1e-4)
    assert (b[:, 8:] - a[:, 8:]).abs().amax(-1).min() > 1e-4  # every later position reads the kept keys
    assert sparse.config.mixers[0]["sparse_cache"] == 2 and "sparse_cache" not in plain.config.mixers[0]


def test_the_layer_cache_holds_the_carry_and_counts_it():
    base = tiny_base("llama")
    model = convert(base, "lolcats", sparse_cache=3, **SETTINGS)
    assert set(model.config.layer_types) == {"linear_attention"}
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.randint(3, 128, (2, 30)), cache=cache, use_cache=True)
    assert cache.get_seq_length() == 30
    mixer = model.mixers()[0]
    entries = cache.layers[0].recurrent_states[3]
    H, D, F = mixer.num_heads, mixer.head_dim, mixer.feature_map_q.out_dim
    assert entries.shape == (2, mixer.num_kv_heads, 3 + 8 + 4, 4 + D + D)  # k, v per key/value head; f(k) recomputed
    assert (
        mixer.state_bytes(2) == 2 * H * F * (D + 1) * 4 + entries.numel() * 4 + 2 * mixer.num_kv_heads * 2 * 2 * D * 4
    )


@pytest.mark.parametrize(
    "target,settings,message",
    [
        ("gla", {"window": 4}, "--sparse-cache does not apply to --to gla"),
        ("lolcats", {"window": 0}, "--sparse-cache needs a softmax window that shares the linear part's normaliser"),
        ("supra", {"window": 4}, "supra mixes its window by output"),
        ("lolcats", {"sparse_cache": -2}, "bad --sparse-cache -2"),
        ("lolcats", {"sparse_select": "oracle"}, "bad --sparse-select 'oracle'"),
        ("lolcats", {"sparse_cache": 0, "sparse_select": "mean"}, "give --sparse-cache N too"),
    ],
)
def test_it_is_refused_where_it_cannot_apply(target, settings, message):
    settings = {"sparse_cache": 4, **settings}
    with pytest.raises(SettingError, match=message):
        convert(tiny_base("llama"), target, **settings)


def test_the_selection_is_recorded_and_a_checkpoint_keeps_it(tmp_path):
    """The keys' choice is part of the layer: recorded in the config (the default too, so a later default cannot change
    a saved model), kept through save and load, given by set_sparse_cache on a trained model, and stated in the card."""
    base = tiny_base("llama")
    assert convert(base, "lolcats", sparse_cache=2, **SETTINGS).config.mixers[0]["sparse_select"] == SPARSE_SELECT
    assert set_sparse_cache(convert(base, "lolcats", **SETTINGS), 2).mixers()[0].sparse_select == SPARSE_SELECT
    torch.manual_seed(0)
    model = perturb_new_parameters(convert(base, "lolcats", **SETTINGS))
    set_sparse_cache(model, 2, "mean")
    assert model.config.mixers[0]["sparse_select"] == "mean" and model.mixers()[0].sparse_select == "mean"
    assert model.config.linearize["history"][-1] == {"step": "sparse_cache", "budget": 2, "select": "mean"}
    ids = torch.randint(3, 128, (1, 120), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.mixers()[0].sparse_select == "mean"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, logits)
    set_sparse_cache(model, 2, "error")
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, logits)  # the choice is used: other keys, other outputs
    assert "per query that saw them" in model_card(tmp_path).text
    choices = next(f for f in ConvertSettings.__dataclass_fields__.values() if f.name == "sparse_select")
    assert choices.metadata["choices"] == SELECTIONS  # the flag offers what the kernel knows


def test_a_config_saved_before_the_selection_was_recorded_keeps_its_selection(tmp_path):
    """Checkpoints saved before the layers recorded their choice chose by the attention received: they load so,
    whatever the default for new caches is."""
    model = convert(tiny_base("llama"), "lolcats", sparse_cache=2, sparse_select="mean", **SETTINGS)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for mixer in config["mixers"]:
        if mixer:
            del mixer["sparse_select"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert (
        {m.sparse_select for m in LinearizedForCausalLM.from_pretrained(tmp_path).mixers().values()}
        == {RECORDLESS_SELECT}
        == {"attention"}
    )
