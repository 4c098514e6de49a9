"""config.json files of real Hub checkpoints, one or more per family, scaled down for tests.

Each dict keeps every field the shipped file has (architectures, torch_dtype, rope_theta / rope_scaling,
sliding-window settings, tie flag, version stamps, even non-transformers extras) with the shipped
values; only the sizes shrink: vocab 128, hidden 48, 3 layers, 6 query / 2 KV heads, intermediate 96,
max_position_embeddings 256. Where the shipped file has no ``head_dim`` neither does the dict (the
family then derives hidden / heads = 8); Qwen3 keeps a head_dim apart from hidden / heads (12).
Special-token ids move into the small vocabulary (0-2, which the tests' random inputs, drawn from
3..127, avoid); a list of eos ids stays a list. A sliding window in use shrinks to WINDOW (16), below
the tests' sequence lengths, so softmax layers kept in a converted model really slide; Qwen2.5's unused
one (32768 = its max_position_embeddings) becomes 256, and max_window_layers scales with the depth.
"""

import copy

from transformers import AutoConfig

SIZES = dict(
    vocab_size=128,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
WINDOW = 16  # a sliding window shorter than the sequences tests run

# name -> (checkpoint whose config.json this is, the file with only the sizes (and ids, windows) scaled)
HUB_CONFIGS = {
    # Llama 3.2: head_dim present (64 = 2048 / 32 there), tied, llama3 rope scaling, a list of eos ids.
    "llama-3.2": (
        "meta-llama/Llama-3.2-1B-Instruct",
        {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 0,  # 128000
            "eos_token_id": [1, 2],  # [128001, 128008, 128009]
            "head_dim": 8,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "mlp_bias": False,
            "model_type": "llama",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 16,  # 8192 of 131072 there
                "rope_type": "llama3",
            },
            "rope_theta": 500000.0,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.45.0.dev0",
            "use_cache": True,
            "vocab_size": 128,
        },
    ),
    # SmolLM2 (a Llama): no head_dim, tied, a pad id, rope_scaling null, nanotron's extra fields.
    "smollm2": (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.041666666666666664,
            "intermediate_size": 96,
            "is_llama_config": True,
            "max_position_embeddings": 256,
            "mlp_bias": False,
            "model_type": "llama",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "pad_token_id": 2,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_interleaved": False,
            "rope_scaling": None,
            "rope_theta": 100000,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.42.3",
            "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
            "use_cache": True,
            "vocab_size": 128,
        },
    ),
    # TinyLlama (Llama 2 layout): no head_dim, untied.
    "tinyllama": (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "model_type": "llama",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.35.0",
            "use_cache": True,
            "vocab_size": 128,
        },
    ),
    # Mistral v0.1: no head_dim, untied, a sliding window (4096 there) on every layer.
    "mistral-v0.1": (
        "mistralai/Mistral-7B-v0.1",
        {
            "architectures": ["MistralForCausalLM"],
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "model_type": "mistral",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "sliding_window": WINDOW,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.34.0.dev0",
            "use_cache": True,
            "vocab_size": 128,
        },
    ),
    # Mistral v0.3: no head_dim, untied, sliding_window null.
    "mistral-v0.3": (
        "mistralai/Mistral-7B-Instruct-v0.3",
        {
            "architectures": ["MistralForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "model_type": "mistral",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000.0,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.42.0.dev0",
            "use_cache": True,
            "vocab_size": 128,
        },
    ),
    # Qwen2.5 0.5B: no head_dim, tied, q/k/v biases (always, in the family), sliding settings present
    # but off (use_sliding_window false; sliding_window 32768, max_window_layers 21 of 24 there).
    "qwen2.5": (
        "Qwen/Qwen2.5-0.5B-Instruct",
        {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 0,  # 151643
            "eos_token_id": 1,  # 151645
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "max_window_layers": 2,
            "model_type": "qwen2",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 256,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.43.1",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": 128,
        },
    ),
    # Qwen2.5 7B's file (no head_dim, untied; max_window_layers 28 of 28 there) with use_sliding_window
    # switched on, as the family supports: layers from max_window_layers (1) on slide, layer 0 does not.
    "qwen2.5-sliding": (
        "Qwen/Qwen2.5-7B-Instruct",
        {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 0,  # 151643
            "eos_token_id": 1,  # 151645
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "max_window_layers": 1,
            "model_type": "qwen2",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": WINDOW,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.43.1",
            "use_cache": True,
            "use_sliding_window": True,
            "vocab_size": 128,
        },
    ),
    # Qwen3 0.6B: head_dim 128 != 1024 / 16 there (12 != 48 / 6 here), tied, no attention bias, q/k norms
    # (always, in the family), sliding settings present but off.
    "qwen3": (
        "Qwen/Qwen3-0.6B",
        {
            "architectures": ["Qwen3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 0,  # 151643
            "eos_token_id": 1,  # 151645
            "head_dim": 12,
            "hidden_act": "silu",
            "hidden_size": 48,
            "initializer_range": 0.02,
            "intermediate_size": 96,
            "max_position_embeddings": 256,
            "max_window_layers": 3,
            "model_type": "qwen3",
            "num_attention_heads": 6,
            "num_hidden_layers": 3,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 1000000,
            "sliding_window": None,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": 128,
        },
    ),
}

# The base each family name stands for in the family-parametrized tests: between them tied and untied
# embeddings, head_dim absent (mistral, qwen2), present and equal to hidden / heads (llama) and apart
# from it (qwen3), q/k/v biases (qwen2), llama3 rope scaling (llama), a sliding window (mistral).
DEFAULT_FOR_FAMILY = {"llama": "llama-3.2", "mistral": "mistral-v0.1", "qwen2": "qwen2.5", "qwen3": "qwen3"}


def hub_config_dict(name, layers=None):
    """The scaled config.json of ``name`` (a HUB_CONFIGS key or a family name) as a fresh dict."""
    name = DEFAULT_FOR_FAMILY.get(name, name)
    config = copy.deepcopy(HUB_CONFIGS[name][1])
    if layers is not None:
        config["num_hidden_layers"] = layers
        if "max_window_layers" in config:  # keep where sliding starts, relative to depth as shipped
            config["max_window_layers"] = min(config["max_window_layers"], layers)
    return config


def hub_config(name, layers=None):
    """The family's config object built from that dict, as ``from_pretrained`` builds it from config.json."""
    config = hub_config_dict(name, layers)
    return AutoConfig.for_model(config.pop("model_type"), **config)
