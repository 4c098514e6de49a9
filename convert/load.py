"""Loading what a command names: a converted checkpoint folder or any base ``--base`` accepts. One place for the
check "is this folder a linearize checkpoint" and for loading one, shared by eval, bench, distill and the Hub."""

import json
from pathlib import Path

from linearize.convert.bases import load_base, load_config, load_tokenizer, resolve_dtype


def converted_config(spec):
    """The config dict of a converted checkpoint folder, or None where ``spec`` is not one (a base, a hub id, a
    native export)."""
    config = Path(str(spec)).expanduser() / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return data if data.get("model_type") == "linearized" else None


def load_model(spec, dtype="auto"):
    """(model, tokenizer, name) for a converted checkpoint folder or any base ``--base`` accepts, loaded in
    ``dtype`` whatever dtype the checkpoint was saved in (auto: bfloat16 on CUDA, float32 on CPU), on the
    GPU where CUDA is available."""
    import torch
    from transformers import AutoTokenizer

    dtype = resolve_dtype(dtype)
    path = Path(str(spec)).expanduser()
    if converted_config(path) is not None:
        from linearize.convert.auto import LinearizedForCausalLM

        model = LinearizedForCausalLM.from_pretrained(path, dtype=dtype).eval()
        has_tokenizer = any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = (
            AutoTokenizer.from_pretrained(path) if has_tokenizer else load_tokenizer(model.config.linearize["base"])
        )
        name = path.name
    else:
        model, tokenizer, name = load_base(spec, dtype=dtype), load_tokenizer(spec), str(spec)
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer, name


def max_positions(spec):
    """The longest sequence a model (checkpoint folder or base spec) takes, from its config alone (no
    weights loaded); None where the config does not say."""
    config = converted_config(spec)
    if config is not None:
        return config.get("max_position_embeddings")
    return getattr(load_config(spec)[1], "max_position_embeddings", None)
