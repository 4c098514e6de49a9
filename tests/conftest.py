import os

import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
COMMON = dict(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def tiny_base(family, seed=0, layers=3):
    """A tiny random base with GQA (6 query heads, 2 KV heads); qwen3 gets head_dim 12 != hidden / heads."""
    torch.manual_seed(seed)
    kw = dict(COMMON, num_hidden_layers=layers)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kw))
    elif family == "mistral":
        model = MistralForCausalLM(MistralConfig(**kw, sliding_window=None))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kw))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**kw, head_dim=12))
    return model.eval()


def perturb_new_parameters(model, scale=0.3, seed=1):
    """Move the mixers' new parameters off their identity init, so tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mixer in model.mixers().values():
            for name, p in mixer.named_parameters():
                if name in mixer.new_parameter_names():
                    p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def tiny_settings(base, target):
    """Conversion settings that exercise each target on a tiny model: a 4-token LoLCATs window (decode
    crosses it), and for RecurFormer a recency threshold at the median so layers mix both head kinds."""
    if target == "lolcats":
        return {"window": 4, "decay": 16, "sinks": 2}
    if target == "recurformer":
        from linearize.convert.calibration import head_recency

        ids = torch.randint(3, 128, (2, 40), generator=torch.Generator().manual_seed(11))
        threshold = head_recency(base, ids, window=8).median().item()
        return {"calibration": ids, "recency_window": 8, "recency_threshold": threshold}
    return {}
