"""Saved checkpoints load with plain transformers: remote code where linearize is absent, natively where it is."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

import linearize.convert.auto  # noqa: F401  (registers the Auto classes)
from linearize.convert.convert import convert

from helpers import case, perturb_new_parameters, tiny_base

# Run in a fresh interpreter where `import linearize` fails, as on a machine with only torch + transformers.
NO_LINEARIZE = textwrap.dedent("""
    import sys
    sys.modules["linearize"] = None  # any import of linearize now raises ImportError
    import torch
    from transformers import AutoModelForCausalLM
    try:
        import linearize
        raise SystemExit("linearize was importable")
    except ImportError:
        pass
    ckpt, ref = sys.argv[1], torch.load(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(ref["ids"]).logits
        out = model.generate(ref["ids"][:, :6], attention_mask=torch.ones(1, 6, dtype=torch.long),
                             max_new_tokens=8, do_sample=False)
    torch.save({"logits": logits, "generated": out}, sys.argv[3])
""")


@pytest.mark.parametrize(
    "family,target,keep",
    [
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
    ],
)
def test_load_without_linearize_gives_identical_logits(tmp_path, family, target, keep):
    base = tiny_base(family)
    target, settings = case(base, target)
    model = perturb_new_parameters(convert(base, target, keep_attention=keep, **settings))
    ids = torch.randint(3, 128, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
        generated = model.generate(
            ids[:, :6], attention_mask=torch.ones(1, 6, dtype=torch.long), max_new_tokens=8, do_sample=False
        )
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    assert (ckpt / "model.safetensors").exists() and not list(ckpt.glob("*.bin"))
    torch.save({"ids": ids}, tmp_path / "ref.pt")
    script = tmp_path / "load.py"
    script.write_text(NO_LINEARIZE)
    subprocess.run(
        [sys.executable, "-I", str(script), str(ckpt), str(tmp_path / "ref.pt"), str(tmp_path / "out.pt")],
        check=True,
        cwd=tmp_path,
    )
    out = torch.load(tmp_path / "out.pt")
    assert torch.equal(out["logits"], logits)
    assert torch.equal(out["generated"], generated)

    # With linearize imported, the same folder loads natively (no remote code) and saves again.
    native = AutoModelForCausalLM.from_pretrained(ckpt)
    assert type(native).__module__.startswith("linearize.")
    with torch.no_grad():
        assert torch.equal(native(ids).logits, logits)
    assert native.config.linearize["target"] == target


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
