"""Saved checkpoints load with plain transformers: remote code where linearize is absent, natively where it is."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import linearize.convert.auto  # noqa: F401  (registers the Auto classes)
from linearize.convert.convert import convert

from helpers import case, outputs_without_linearize, perturb_new_parameters, tiny_base

BARE_CASES = [
    ("llama", "lolcats", "1"),
    ("qwen3", "supra", None),
    ("qwen2", "hedgehog", "0"),
    ("mistral", "t2r", None),
    ("llama", "linear", None),
    ("qwen3", "mamba", "0"),
    ("llama", "recurformer", None),
    ("qwen3", "gla", None),
    ("llama", "gdn", "-1"),
    ("llama", "gla+window", None),
    ("qwen2", "gla+liger", "1"),
    ("qwen3", "mamba+window", "0"),
    ("mistral", "gdn+window", "-1"),
    ("qwen2", "lolcats+sparse", "1"),
]
IDS = torch.randint(3, 128, (1, 20), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def bare_loads(tmp_path_factory):
    """Every case saved, then all loaded without linearize in one fresh interpreter: {case: (model, folder, its
    logits and greedy tokens there)}."""
    root = tmp_path_factory.mktemp("bare")
    models, folders = {}, []
    for family, name, keep in BARE_CASES:
        base = tiny_base(family)
        target, settings = case(base, name)
        model = perturb_new_parameters(convert(base, target, keep_attention=keep, **settings))
        folder = root / f"{family}-{name.replace('+', '-')}"
        model.save_pretrained(folder)
        models[family, name, keep] = model
        folders.append(folder)
    outs = outputs_without_linearize(folders, IDS, root)
    return {key: (models[key], folder, out) for key, folder, out in zip(models, folders, outs)}


@pytest.mark.parametrize("family,target,keep", BARE_CASES)
def test_load_without_linearize_gives_identical_logits(bare_loads, family, target, keep):
    model, ckpt, out = bare_loads[family, target, keep]
    with torch.no_grad():
        logits = model(IDS).logits
        generated = model.generate(
            IDS[:, :6], attention_mask=torch.ones(1, 6, dtype=torch.long), max_new_tokens=8, do_sample=False
        )
    assert (ckpt / "model.safetensors").exists() and not list(ckpt.glob("*.bin"))
    assert torch.equal(out["logits"], logits)
    assert torch.equal(out["generated"], generated)

    # With linearize imported, the same folder loads natively (no remote code) and saves again.
    native = AutoModelForCausalLM.from_pretrained(ckpt)
    assert type(native).__module__.startswith("linearize.")
    with torch.no_grad():
        assert torch.equal(native(IDS).logits, logits)
    assert native.config.linearize["target"] == target.partition("+")[0]


def test_checkpoint_records_how_to_rebuild_it(tmp_path):
    model = convert(tiny_base("llama"), "lolcats", keep_attention="1", window=4)
    model.save_pretrained(tmp_path)
    config = AutoModelForCausalLM.from_pretrained(tmp_path).config
    assert config.base_config["model_type"] == "llama"
    assert config.mixers[1] is None and config.mixers[0] == {"target": "lolcats", "feature_dim": 64, "window": 4}
    assert config.layer_types == ["hybrid_sliding", "full_attention", "hybrid_sliding"]
    assert set(config.linearize["versions"]) >= {"linearize", "transformers", "torch"}
    assert config.auto_map["AutoModelForCausalLM"] == "modeling_linearized.LinearizedForCausalLM"
    # The shipped modules import each other only through same-folder relative imports.
    for path in tmp_path.glob("*.py"):
        assert "from linearize" not in path.read_text().replace("    from linearize", ""), path.name
