"""The base families linearize converts, and where transformers keeps their building blocks.

Converted models are built from the base family's own decoder layers, norms and rotary embedding
(transformers' classes, not copies); only ``self_attn`` is swapped in converted layers.
"""

import importlib
from types import SimpleNamespace

from linearize.errors import LinearizeError

# model_type -> class-name prefix in transformers' modeling module
FAMILIES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}


class UnsupportedFamilyError(LinearizeError):
    pass


def check_family(model_type):
    if model_type not in FAMILIES:
        raise UnsupportedFamilyError(
            f"unsupported model family {model_type!r}: linearize converts {', '.join(FAMILIES)}"
        )


def family(model_type):
    """The family's transformers classes: attention, decoder_layer, norm, rotary, apply_rotary."""
    check_family(model_type)
    prefix = FAMILIES[model_type]
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    return SimpleNamespace(
        attention=getattr(module, f"{prefix}Attention"),
        decoder_layer=getattr(module, f"{prefix}DecoderLayer"),
        norm=getattr(module, f"{prefix}RMSNorm"),
        rotary=getattr(module, f"{prefix}RotaryEmbedding"),
        apply_rotary=module.apply_rotary_pos_emb,
    )


def head_dim(config):
    """The attention head size: ``head_dim`` where the config has one (Qwen3 sets it apart from the hidden
    size), else hidden_size / num_attention_heads, as the family's own attention computes it. Real Qwen2
    and many Llama/Mistral configs omit the field."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def base_layer_types(base_config):
    """Attention layer types of the base (full or sliding), as transformers' cache layers name them."""
    types = getattr(base_config, "layer_types", None)
    if types is not None:
        return list(types)
    sliding = getattr(base_config, "sliding_window", None) is not None and getattr(
        base_config, "use_sliding_window", True
    )
    return ["sliding_attention" if sliding else "full_attention"] * base_config.num_hidden_layers
