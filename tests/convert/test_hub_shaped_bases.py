"""The test bases are built from config.json files as the Hub ships them (tests/hub_configs.py), and
every target converts every one of them: through the CLI from a saved folder, and exactly (cached decode
== full forward) in memory for the bases the ``family`` fixture does not already cover."""

import json
import subprocess

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PreTrainedTokenizerFast

import linearize.convert.auto  # noqa: F401  (registers the Auto classes)
from linearize.cli import main
from linearize.convert import calibration
from linearize.convert.convert import convert
from linearize.convert.families import FAMILIES as PREFIX
from linearize.convert.targets import MIXERS

from helpers import FAMILIES, HUB_BASES, LINEARIZE, assert_close, perturb_new_parameters, tiny_base, tiny_settings
from hub_configs import DEFAULT_FOR_FAMILY, HUB_CONFIGS, SIZES, WINDOW, hub_config_dict

TARGETS = list(MIXERS)
NO_HEAD_DIM = {"smollm2", "tinyllama", "mistral-v0.1", "mistral-v0.3", "qwen2.5", "qwen2.5-sliding"}
TIED = {"llama-3.2", "smollm2", "qwen2.5", "qwen3"}
TEST_LENGTH = 41  # the cached-decode tests' sequences: longer than WINDOW, so sliding layers slide


def test_configs_are_shaped_like_the_hubs(tmp_path):
    assert set(DEFAULT_FOR_FAMILY) == set(FAMILIES) and set(DEFAULT_FOR_FAMILY.values()) <= set(HUB_BASES)
    assert {d["model_type"] for _, d in HUB_CONFIGS.values()} == set(FAMILIES)
    for name in HUB_BASES:
        checkpoint, raw = HUB_CONFIGS[name]
        d = hub_config_dict(name)
        assert d == raw and d is not raw
        family = d["model_type"]
        assert d["architectures"] == [PREFIX[family] + "ForCausalLM"]
        assert d["torch_dtype"] == "bfloat16" and d["transformers_version"].startswith("4.")
        assert "rope_theta" in d and "rope_parameters" not in d and "dtype" not in d  # as written before transformers 5
        assert {k: d[k] for k in SIZES} == SIZES, name
        assert ("head_dim" in d) == (name not in NO_HEAD_DIM), name
        assert d["tie_word_embeddings"] == (name in TIED), name
        assert isinstance(d["eos_token_id"], list) == (name == "llama-3.2")

        # Built as from_pretrained builds it from that file, and the model the fixture makes of it.
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(d))
        config = AutoConfig.from_pretrained(tmp_path / name)
        base = tiny_base(name)
        assert {k: v for k, v in base.config.to_dict().items() if k not in ("_name_or_path", "dtype")} == {
            k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "dtype")
        }, name
        assert base.dtype == torch.float32
        if family == "qwen2":  # the family has no head_dim field at all
            assert not hasattr(base.config, "head_dim")
        if name == "qwen3":
            assert base.config.head_dim == 12 != SIZES["hidden_size"] // SIZES["num_attention_heads"]
        assert (base.lm_head.weight is base.model.embed_tokens.weight) == (name in TIED), name
        attn = base.model.layers[0].self_attn
        assert all((getattr(attn, p).bias is not None) == (family == "qwen2") for p in ("q_proj", "k_proj", "v_proj"))
        assert attn.o_proj.bias is None
        assert hasattr(attn, "q_norm") == hasattr(attn, "k_norm") == (family == "qwen3")

    # Sliding windows as shipped: Mistral v0.1 slides every layer (4096 there, WINDOW here), v0.3 none;
    # Qwen2.5 has the settings but use_sliding_window false; switched on, layers from max_window_layers slide.
    assert WINDOW < TEST_LENGTH
    assert tiny_base("mistral").config.sliding_window == WINDOW
    assert tiny_base("mistral-v0.3").config.sliding_window is None
    qwen = tiny_base("qwen2").config
    assert hub_config_dict("qwen2")["sliding_window"] == 256 and qwen.sliding_window is None
    assert qwen.layer_types == ["full_attention"] * 3
    sliding = tiny_base("qwen2.5-sliding").config
    assert sliding.sliding_window == WINDOW
    assert sliding.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert tiny_base("llama").config.rope_parameters["rope_type"] == "llama3"
    # The family defaults the other tests run on include tied and untied embeddings, head_dim absent and not.
    assert {n in TIED for n in DEFAULT_FOR_FAMILY.values()} == {True, False}
    assert {n in NO_HEAD_DIM for n in DEFAULT_FOR_FAMILY.values()} == {True, False}


def test_sliding_layers_really_slide():
    """On the sliding bases the base's own output past WINDOW tokens differs from full attention's."""
    ids = torch.randint(3, 128, (1, TEST_LENGTH), generator=torch.Generator().manual_seed(0))
    for name in ("mistral-v0.1", "qwen2.5-sliding"):
        base = tiny_base(name)
        full = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(**{**hub_config_dict(name), "sliding_window": None, "use_sliding_window": False}),
            dtype=torch.float32,
        ).eval()
        full.load_state_dict(base.state_dict())
        with torch.no_grad():
            a, b = base(ids).logits, full(ids).logits
        assert torch.allclose(a[:, :WINDOW], b[:, :WINDOW], atol=1e-5)
        assert not torch.allclose(a[:, WINDOW:], b[:, WINDOW:], atol=1e-3), name


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_converts_the_other_hub_bases_exactly(other_hub_base, target):
    """Prefill, then single-token steps through the cache == one cache-free forward, with a softmax layer
    kept (it slides on the sliding bases); every base tensor reused, tied or untied as the base."""
    base = tiny_base(other_hub_base)
    model = perturb_new_parameters(convert(base, target, keep_attention="1", **tiny_settings(base, target)))
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == base.config.tie_word_embeddings
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in base.state_dict().items())
    ids = torch.randint(3, 128, (2, TEST_LENGTH), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :9], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(9, TEST_LENGTH)]
    assert_close(torch.cat(steps, 1), full, 1e-4)


def char_tokenizer():
    """A character-level tokenizer whose ids fit the tiny vocabulary (0-2 special, 3-99 characters)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def save_as_shipped(name, path):
    """A base folder as a Hub download has it: weights, tokenizer, and the config.json as shipped (not as
    transformers 5 would rewrite it: no head_dim where the original has none, rope_theta, torch_dtype)."""
    tiny_base(name).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    (path / "config.json").write_text(json.dumps(hub_config_dict(name), indent=2))
    return path


CONSOLE_TARGET = {"llama": "lolcats", "mistral": "hedgehog", "qwen2": "gdn", "qwen3": "mamba"}


@pytest.mark.parametrize("name", HUB_BASES)
def test_cli_converts_a_saved_hub_shaped_base_to_every_target(name, tmp_path, capsys, monkeypatch):
    base_dir = save_as_shipped(name, tmp_path / name)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    family = hub_config_dict(name)["model_type"]
    # RecurFormer calibrates on the default texts: a short prefix of them keeps the char tokenizer quick.
    texts = calibration.stdlib_documents()[:2]
    monkeypatch.setattr(calibration, "stdlib_documents", lambda: texts)
    for target in TARGETS:
        out = tmp_path / f"out-{target}"
        args = ["convert", "--base", str(base_dir), "--to", target, "--out", str(out), "--keep-attention", "1"]
        if target == "recurformer":
            args += ["--recency-fraction", "0.5"]
        code = main(args)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert f"layers to {target} (softmax attention kept in [1])" in captured.out, captured.out
        assert "decode state per sequence at 4k tokens" in captured.out and "saved to" in captured.out
        model = AutoModelForCausalLM.from_pretrained(out)
        rebuilt = model.config.get_base_config()  # the base's config, as the checkpoint rebuilds it
        assert rebuilt.model_type == family
        assert hasattr(rebuilt, "head_dim") == (family != "qwen2")  # as the family's own config class has it
        rebuilt_dict = rebuilt.to_dict()
        for key, value in base.config.to_dict().items():
            if key not in ("architectures", "_name_or_path", "dtype"):
                assert rebuilt_dict[key] == value, (target, key)
        assert getattr(rebuilt, "sliding_window", None) == getattr(base.config, "sliding_window", None)
        sd = model.state_dict()
        for key, tensor in base.state_dict().items():
            assert torch.equal(sd[key], tensor), (target, key)
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == (name in TIED), target

    # Keeping every layer, the saved checkpoint is the base: same logits past the sliding window.
    out = tmp_path / "out-kept"
    assert (
        main(["convert", "--base", str(base_dir), "--to", "linear", "--out", str(out), "--keep-attention", "0,1,2"])
        == 0
    )
    ids = torch.randint(3, 128, (2, TEST_LENGTH), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(out)(ids).logits, base(ids).logits)

    # The console script, once per family, on the family's default base.
    if name == DEFAULT_FOR_FAMILY[family]:
        out = tmp_path / "out-console"
        proc = subprocess.run(
            [LINEARIZE, "convert", "--base", str(base_dir), "--to", CONSOLE_TARGET[family], "--out", str(out)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"converted 3/3 layers to {CONSOLE_TARGET[family]}" in proc.stdout
        assert "decode state per sequence at 4k tokens" in proc.stdout and (out / "model.safetensors").exists()
