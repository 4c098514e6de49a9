"""What every recipe shares: its command line, and the tiny CPU stand-in base that --smoke runs on
(a 2-layer random Llama with the embedded SmolLM2 tokenizer, so real text and chat templates work)."""

import argparse
import tempfile
from pathlib import Path


def recipe_args(doc):
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--base", default=None, help="base model (default: the recipe's published base)")
    parser.add_argument("--out", default=None, help="output folder for the checkpoint")
    parser.add_argument("--data", default=None, help="training data (default: the recipe's)")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU run of this recipe that checks its result")
    return parser.parse_args()


def tiny_base_dir(layers=4):
    """A tiny random Llama saved with the embedded tokenizer; returns its folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from linearize.api import load_tokenizer

    tok = load_tokenizer("llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    folder = Path(tempfile.mkdtemp(prefix="linearize-smoke-")) / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# The smoke runs' budget: enough steps for losses to move, small enough for CI; quality is measured on
# the held-out split only (a random tiny base has nothing to show on the out-of-domain corpora or recall), over
# 16 windows: the check needs it finite, not precise.
SMOKE = dict(
    tokens=6144, seq_len=64, batch_size=2, eval_tokens=1024, eval_corpora=(), passkey_lengths=(), mqar_pairs=()
)


def check(result, out, kept_layers=None):
    """What every smoke run asserts: attention transfer lowered its loss (KD on a random tiny teacher
    has too little signal to promise that in a few steps; its loss must stay finite), the checkpoint
    loads with plain transformers and generates, and the plan is the recipe's."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "transfer" in result["stages"]:
        s = result["stages"]["transfer"]
        assert s["last_loss"] < s["first_loss"], ("transfer", s["first_loss"], s["last_loss"])
    assert all(math.isfinite(s["last_loss"]) for s in result["stages"].values())
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("The pass key is 42.", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5
    if kept_layers is not None:
        kept = [i for i, m in enumerate(model.config.mixers) if m is None]
        assert kept == kept_layers, kept
    ppl = result["perplexity"]
    assert torch.isfinite(torch.tensor(ppl["student"])), ppl
    print(f"smoke ok: stages {list(result['stages'])}, held-out perplexity ratio {ppl['ratio']:.2f}")
